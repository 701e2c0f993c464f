"""How the relay splits what a client sends into commands and the message
(relay.connection: LineConnection, DataSink): however the octets arrive,
the message is exactly what came between the 354 and <CRLF>.<CRLF>, and
what follows is commands again."""
from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay_helpers import RawClient

from correo_server.relay.data import MessageReader
from correo_server.relay.connection import DataSink


def sink_read(data: bytes, cuts: list[int], *, max_bytes: int = 10_000, max_line: int = 30) -> tuple[MessageReader,
                                                                                                   bytes]:
    loop = asyncio.new_event_loop()
    try:
        sink = DataSink(MessageReader(max_bytes, max_line), loop.create_future())
        points = sorted({c for c in cuts if 0 < c < len(data)})
        rest = None
        for i, j in zip([0, *points], [*points, len(data)]):
            if rest is None:
                rest = sink.feed(data[i:j])
            else:
                rest += data[i:j]
        assert sink.done.done() == (rest is not None)
        return sink.reader, rest if rest is not None else b""
    finally:
        loop.close()


_LINES = st.lists(st.one_of(st.text(alphabet="ab .", max_size=10),
                            st.sampled_from([".", "..x", "a\rb", "a\nb", "\r", "n\x00l", "x" * 25, "y" * 40])
                            ).map(lambda t: t.encode()), max_size=25)


class TestSink:
    @settings(max_examples=300, deadline=None)
    @given(lines=_LINES, cuts=st.lists(st.integers(min_value=1, max_value=600), max_size=6),
           max_bytes=st.sampled_from([0, 60, 10_000]))
    def test_same_message_however_it_is_cut(self, lines, cuts, max_bytes):
        data = b"".join((b"." if line.startswith(b".") else b"") + line + b"\r\n" for line in lines)
        whole, rest = sink_read(data + b".\r\nQUIT\r\n", [], max_bytes=max_bytes)
        cut, cut_rest = sink_read(data + b".\r\nQUIT\r\n", cuts, max_bytes=max_bytes)
        assert rest == cut_rest == b"QUIT\r\n"
        assert (whole.problem, whole.size) == (cut.problem, cut.size) or cut.problem is not None
        if whole.problem is None:
            assert cut.content() == whole.content() == data.replace(b"\r\n.", b"\r\n").removeprefix(b".")

    @pytest.mark.parametrize("data", [b".\r\n", b"\r\n.\r\n", b"a\r\n.\r\n"])
    def test_short_messages(self, data):
        for cut in range(len(data) + 1):
            reader, rest = sink_read(data + b"NOOP\r\n", [cut])
            assert rest == b"NOOP\r\n" and reader.content() == data[:-3]


async def start(relay) -> RawClient:
    client = await RawClient.connect(relay.smtp)
    assert (await client.cmd("EHLO client.example"))[0] == 250
    return client


async def test_a_message_sent_before_the_354_is_the_message(make_relay):
    """A client that does not wait for 354 (against RFC 2920): what follows
    DATA is the message all the same, never commands."""
    relay = await make_relay()
    client = await start(relay)
    await client.send(b"MAIL FROM:<someone@foreign.example>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n"
                      b"MAIL FROM:<ceo@example.com>\r\nRCPT TO:<bob@example.com>\r\n\r\nbody\r\n.\r\nNOOP\r\n")
    replies = [(await client.reply())[0] for _ in range(5)]
    assert replies == [250, 250, 354, 250, 250]
    await client.close()
    (message,) = relay.sink.messages
    assert message.rcpt_tos == ["alice@example.com"]
    assert message.content.endswith(b"MAIL FROM:<ceo@example.com>\r\nRCPT TO:<bob@example.com>\r\n\r\nbody\r\n")


async def test_commands_after_a_refused_data_are_commands(make_relay):
    relay = await make_relay()
    client = await start(relay)
    await client.send(b"DATA\r\nNOOP\r\nMAIL FROM:<someone@foreign.example>\r\nRCPT TO:<alice@example.com>\r\n"
                      b"DA")
    assert [(await client.reply())[0] for _ in range(4)] == [503, 250, 250, 250]
    await client.send(b"TA\r\nSubject: two\r\n\r\n.\r\nQUIT\r\n")
    assert [(await client.reply())[0] for _ in range(3)] == [354, 250, 221]
    await client.close()
    assert [m.content.endswith(b"Subject: two\r\n\r\n") for m in relay.sink.messages] == [True]


async def test_pipelined_messages_on_one_connection(make_relay):
    relay = await make_relay()
    client = await start(relay)
    one = b"MAIL FROM:<someone@foreign.example>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n"
    await client.send(one)
    assert [(await client.reply())[0] for _ in range(3)] == [250, 250, 354]
    await client.send(b"Subject: 1\r\n\r\n.\r\n" + one)  # the next transaction right after the end marker
    assert [(await client.reply())[0] for _ in range(4)] == [250, 250, 250, 354]
    await client.send(b"Subject: 2\r\n\r\n.\r\n")
    assert (await client.reply())[0] == 250
    await client.close()
    assert [m.content[-14:] for m in relay.sink.messages] == [b"Subject: 1\r\n\r\n", b"Subject: 2\r\n\r\n"]


@pytest.mark.parametrize("chunks, codes", [
    ([b"MAIL FROM:<someone@foreign.example>\r\nRCPT TO:<alice@example.com>\r\nDA", b"TA\r\nSubj",
      b"ect: x\r\n\r\nbody\r\n.", b"\r\nNOOP\r\n"], [250, 250, 354, 250, 250]),
    ([b"MAIL FROM:<someone@foreign.example>\r\nRCPT TO:<alice@example.com>\r\ndata \r\nSubject: x\r\n\r\n",
      b"body\r\n.\r", b"\n"], [250, 250, 354, 250]),
    ([b"MAIL FROM:<someone@foreign.example>\r\nRCPT TO:<alice@example.com>\r\nD", b"A", b"T", b"A", b" ", b"\r",
      b"\nSubject: x\r\n\r\nbody\r\n", b".\r\n"], [250, 250, 354, 250]),
    # DATA with an argument is refused, not answered 354; "DATA<TAB>" is no verb at all
    ([b"MAIL FROM:<someone@foreign.example>\r\nRCPT TO:<alice@example.com>\r\nDATA x\r\nDATA\t\r\nNOOP\r\n"],
     [250, 250, 501, 500, 250]),
    ([b"MAIL FROM:<someone@foreign.example>\r\nRCPT TO:<data@example.com>\r\nXDATA\r\nNOOP\r\n"],
     [250, 550, 500, 250]),
])
async def test_commands_and_message_however_the_octets_are_cut(make_relay, chunks, codes):
    relay = await make_relay()
    client = await start(relay)
    for chunk in chunks:
        await client.send(chunk)
        await asyncio.sleep(0.01)  # separate segments (the reply order is what is checked, not timing)
    assert [(await client.reply())[0] for _ in codes] == codes
    await client.close()
    if 354 in codes:
        (message,) = relay.sink.messages
        assert message.content.endswith(b"Subject: x\r\n\r\nbody\r\n")
