"""The cheaper aiosmtpd construction and address parsing (correo_server.smtpbase)
behave exactly like aiosmtpd's own, for the relay, the queue's LMTP and the
mailstore's LMTP."""
from __future__ import annotations

import asyncio

import pytest
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st
from relay_helpers import RawClient

from correo_server import smtpbase
from correo_server.mailstore.lmtp import _LMTP
from correo_server.queue.lmtp_in import QueueLMTP
from correo_server.smtpbase import simple_path


class _Handler:
    async def handle_MAIL(self, server, session, envelope, address, options):
        return "250 OK"

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        return responses


def _tables(obj) -> dict:
    return {"attrs": set(vars(obj)), "smtp": set(obj._smtp_methods), "auth": list(obj._auth_methods),
            "hooks": set(obj._handle_hooks), "ehlo": obj._ehlo_hook_ver,
            "bound_to_self": all(m.__self__ is obj for m in obj._smtp_methods.values())}


@pytest.mark.parametrize("cls, extra", [(QueueLMTP, {}), (_LMTP, {"line_length_limit": 5000})])
async def test_fast_construction_sets_what_aiosmtpd_sets(cls, extra):
    handler = _Handler()
    kwargs = dict(data_size_limit=1000, enable_SMTPUTF8=True, decode_data=False, hostname="mx.example",
                  ident="x", timeout=30, loop=asyncio.get_running_loop())
    smtpbase._verified.pop(cls, None)
    first = cls(handler, **extra, **kwargs)  # aiosmtpd's __init__, checked against the fast one
    assert smtpbase._verified[cls] is True
    fast = cls(handler, **extra, **kwargs)

    class Plain(cls):  # aiosmtpd's own __init__, every time
        def __init__(self, handler, **kw):
            if "line_length_limit" in kw:
                self.line_length_limit = kw.pop("line_length_limit")
            SMTP.__init__(self, handler, **kw)

    plain = Plain(handler, **extra, **kwargs)
    assert _tables(fast) == _tables(plain) == _tables(first)
    assert fast._stream_reader is not first._stream_reader
    assert fast._stream_reader._limit == plain._stream_reader._limit
    for name in ("hostname", "data_size_limit", "enable_SMTPUTF8", "_decode_data", "_timeout_duration",
                 "__ident__", "require_starttls", "_auth_require_tls", "_proxy_timeout", "_auth_required"):
        assert getattr(fast, name) == getattr(plain, name), name


async def test_the_relay_session_is_built_the_fast_way_and_keeps_its_command_guards(make_relay):
    relay = await make_relay()
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.smtp)
    await reader.readline()
    writer.write(b"HELP MAIL\r\nNOOP \x00\r\n")
    help_reply = await reader.readline()
    nul_reply = await reader.readline()
    writer.close()
    from correo_server.relay.smtp import RelaySMTP
    assert smtpbase._verified.get(RelaySMTP) is True
    # aiosmtpd's HELP text survives the guard around every command
    assert b"Syntax: MAIL FROM:" in help_reply and help_reply.startswith(b"250 "), help_reply
    assert nul_reply.startswith(b"500 5.5.2"), nul_reply


_ATOM = st.text(alphabet="abcXYZ019!#$%&'*+/=?^_`{|}~-", min_size=1, max_size=8)
_LOCAL = st.lists(_ATOM, min_size=1, max_size=3).map(".".join)
_LABEL = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?", fullmatch=True)
_DOMAIN = st.lists(_LABEL, min_size=1, max_size=3).map(".".join)
_REST = st.sampled_from(["", " SIZE=2048", " BODY=8BITMIME SMTPUTF8", "  SIZE=1", " X", "\tSIZE=3"])
_ADDRESS = st.builds(lambda l, d, r: f"<{l}@{d}>{r}", _LOCAL, _DOMAIN, _REST)
_NOISE = st.text(alphabet='<>@."\\ ()[]:,;aZ9-\t\x00é', max_size=24)


def _aiosmtpd(arg: str):
    return SMTP._getaddr(object.__new__(SMTP), arg)


@settings(max_examples=400, deadline=None)
@given(st.one_of(_ADDRESS, _NOISE, st.builds(lambda a, n: a + n, _ADDRESS, _NOISE),
                 st.builds(lambda n, a: n + a, _NOISE, _ADDRESS)))
def test_the_fast_address_parser_agrees_with_aiosmtpd_whenever_it_answers(arg):
    found = simple_path(arg)
    if found is not None:
        assert found == _aiosmtpd(arg)


@pytest.mark.parametrize("arg", ["<user@bench.test>", "<user@bench.test> SIZE=2335", "<a.b+c@x-y.example>",
                                 "<postmaster@example.com> BODY=8BITMIME SMTPUTF8"])
def test_common_addresses_take_the_fast_path(arg):
    assert simple_path(arg) is not None
    assert simple_path(arg) == _aiosmtpd(arg)


@pytest.mark.parametrize("arg", ["<>", "<\"quoted local\"@example.com>", "<user@[192.0.2.1]>",
                                 "<@relay.example:user@example.com>", "<jürgen@exämple.de>", "user@example.com",
                                 " <user@example.com>", "<.user@example.com>", "<user@-example.com>",
                                 "<user@example.com> (comment) SIZE=1"])
def test_other_shapes_go_to_aiosmtpd(arg):
    assert simple_path(arg) is None


async def test_a_local_part_over_the_limit_is_still_refused():
    class Limited(QueueLMTP):
        local_part_limit = 4

    server = Limited(_Handler(), hostname="mx.example", loop=asyncio.get_running_loop())
    assert server._getaddr("<abcdefgh@example.com>") == (None, None)
    assert server._getaddr("<abc@example.com>") == ("abc@example.com", "")


async def test_the_idle_timeout_counts_from_the_last_command(make_relay):
    relay = await make_relay(relay={"timeout_seconds": 1})
    client = await RawClient.connect(relay.smtp)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(3):  # active for longer than the timeout: still served
        await asyncio.sleep(0.6)
        assert (await client.cmd("NOOP"))[0] == 250
    last = loop.time()
    code, lines = await client.reply(timeout=5)
    assert (code, lines[-1][4:9]) == (421, "4.4.2")
    assert 0.9 <= loop.time() - last <= 2.5 and loop.time() - start > 2.5
    assert await client.closed()
    await client.close()


# -- DATA: read in large pieces, with aiosmtpd's rules ---------------------------------
class _Recorder:
    def __init__(self) -> None:
        self.contents: list[bytes] = []

    async def handle_NOOP(self, server, session, envelope, arg):
        return "250 2.0.0 end of the conversation"

    async def handle_DATA(self, server, session, envelope):
        self.contents.append(envelope.original_content)
        return "\r\n".join(f"250 2.0.0 <{r}> ok {len(envelope.original_content)}" for r in envelope.rcpt_tos)


class _Small:
    line_length_limit = 40  # tiny limits, so that examples reach them


class _FastLMTP(_Small, smtpbase.Speedups, LMTP):
    pass


class _PlainLMTP(_Small, LMTP):
    pass


async def _serve(cls, handler):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: cls(handler, data_size_limit=300, enable_SMTPUTF8=True, decode_data=False, hostname="t.example",
                    loop=loop), "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _talk(port: int, pieces: list[bytes]) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"LHLO c.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    for piece in pieces:
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0)
    writer.write(b"NOOP\r\n")  # still in step after the data
    replies = []
    while True:
        line = await asyncio.wait_for(reader.readline(), 5)
        replies.append(line)
        if line.startswith(b"250 2.0.0 end") or not line:  # NOOP's reply (or the end)
            break
    writer.close()
    return replies


_LINE = st.one_of(
    st.text(alphabet="ab .", max_size=12),
    st.text(alphabet="xy", min_size=30, max_size=40),  # about the line limit (38 octets and CRLF fit)
    st.text(alphabet="xy", min_size=41, max_size=90),  # too long, even for the reader's buffer
    st.sampled_from([".", "..", ". x", "a\rb", "a\nb", "\r", "\n", "end.", ".\n"]),
).map(lambda s: s.encode())


_SHORT = st.text(alphabet="ab .", min_size=10, max_size=38).map(lambda s: s.encode())
# Mostly fitting lines that cross the size limit, maybe with one long line about there.
_OVER = st.builds(lambda lines, at, long: lines[:at] + [long] + lines[at:] if long else lines,
                  st.lists(_SHORT, min_size=8, max_size=25), st.integers(min_value=0, max_value=25),
                  st.one_of(st.just(b""), st.integers(min_value=39, max_value=200).map(lambda n: b"z" * n)))


@settings(max_examples=200, deadline=None)
@given(lines=st.one_of(st.lists(_LINE, max_size=30), _OVER),
       cuts=st.lists(st.integers(min_value=1, max_value=800), max_size=6))
def test_data_is_read_with_aiosmtpd_s_rules(lines, cuts):
    """Same replies and same content as aiosmtpd's line-by-line DATA, for
    messages under and over the size limit (300) and the line limit (40),
    dots at line starts, bare CR and LF, however the bytes arrive."""
    body = b"".join((b"." if line.startswith(b".") else b"") + line + b"\r\n" for line in lines) + b".\r\n"
    points = sorted({c for c in cuts if c < len(body)})
    pieces = [body[i:j] for i, j in zip([0, *points], [*points, len(body)])]

    async def run():
        fast_h, plain_h = _Recorder(), _Recorder()
        fast, fast_port = await _serve(_FastLMTP, fast_h)
        plain, plain_port = await _serve(_PlainLMTP, plain_h)
        try:
            got = await _talk(fast_port, pieces)
            want = await _talk(plain_port, pieces)
        finally:
            fast.close()
            plain.close()
        assert got == want
        assert fast_h.contents == plain_h.contents

    asyncio.run(run())
