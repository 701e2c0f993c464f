"""Bad input gets the right reply, the session stays usable, and no message
is mangled: garbage commands, SMTP smuggling with bare LF / bare CR, NUL
bytes, over-long lines; and a well-formed message arrives byte for byte."""
from __future__ import annotations

import pytest

from relay_helpers import RawClient


async def start(relay, rcpt: str = "alice@example.com") -> RawClient:
    client = await RawClient.connect(relay.smtp)
    assert (await client.cmd("EHLO client.example"))[0] == 250
    assert (await client.cmd("MAIL FROM:<someone@foreign.example>"))[0] == 250
    assert (await client.cmd(f"RCPT TO:<{rcpt}>"))[0] == 250
    assert (await client.cmd("DATA"))[0] == 354
    return client


async def still_usable(client: RawClient) -> None:
    """A full transaction after the bad input goes through; and nothing that
    was hidden in the bad input was taken as a command (the very next reply
    belongs to the very next command)."""
    code, lines = await client.cmd("NOOP")
    assert (code, lines) == (250, ["250 2.0.0 OK"])
    assert (await client.cmd("MAIL FROM:<someone@foreign.example>"))[0] == 250
    assert (await client.cmd("RCPT TO:<bob@example.com>"))[0] == 250
    assert (await client.cmd("DATA"))[0] == 354
    await client.send(b"Subject: fine\r\n\r\nfine\r\n.\r\n")
    assert (await client.reply())[0] == 250


async def test_garbage_commands(make_relay):
    relay = await make_relay()
    client = await RawClient.connect(relay.smtp)
    for garbage in (b"HELLO there", b"\x16\x03\x01\x02\x00", b"", b"MAIL", b"RCPT TO:<alice@example.com>",
                    b"DATA", b"MAIL FROM:<a@b.example> BOGUS=1"):
        code, lines = await client.cmd(garbage)
        assert 500 <= code < 600 and lines[-1][4:5] == "5", (garbage, lines)
    assert (await client.cmd("EHLO client.example"))[0] == 250
    code, lines = await client.cmd("MAIL FROM:<a@b.example> BOGUS=1")
    assert (code, lines[-1][4:9]) == (555, "5.5.4")
    code, lines = await client.cmd("MAIL FROM:<not an address>")
    assert (code, lines[-1][4:9]) == (501, "5.1.3")
    code, lines = await client.cmd("XYZZY")
    assert (code, lines[-1][4:9]) == (500, "5.5.2")
    await still_usable(client)
    await client.close()
    assert [m.rcpt_tos for m in relay.sink.messages] == [["bob@example.com"]]


@pytest.mark.parametrize("marker", [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\r\n.\r"])
async def test_smuggling_with_bare_newlines(make_relay, marker):
    """An end-of-data look-alike followed by a second, hidden transaction: the
    message is refused whole; the hidden commands are never run."""
    relay = await make_relay()
    client = await start(relay)
    smuggled = (b"Subject: first\r\n\r\nfirst" + marker +
                b"MAIL FROM:<ceo@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n"
                b"Subject: smuggled\r\n\r\nsmuggled\r\n.\r\n")
    await client.send(smuggled)
    code, lines = await client.reply()
    assert (code, lines[-1][4:9]) == (554, "5.6.0") and "bare CR or LF" in lines[-1]
    await still_usable(client)
    await client.close()
    assert [m.content.endswith(b"fine\r\n") for m in relay.sink.messages] == [True]
    assert relay.service.context.metrics.value("relay_rejections_total", reason="bare_newline") == 1


async def test_bare_lf_line_endings_refused(make_relay):
    relay = await make_relay()
    client = await start(relay)
    await client.send(b"Subject: unix\n\nlines\r\n.\r\n")
    code, lines = await client.reply()
    assert (code, lines[-1][4:9]) == (554, "5.6.0")
    await still_usable(client)
    await client.close()


async def test_nul_bytes(make_relay):
    relay = await make_relay()
    client = await start(relay)
    await client.send(b"Subject: nul\r\n\r\nbefore\x00after\r\n.\r\n")
    code, lines = await client.reply()
    assert (code, lines[-1][4:9]) == (554, "5.6.0") and "NUL" in lines[-1]
    code, lines = await client.cmd(b"MAIL FROM:<a\x00b@example.com>")
    assert (code, lines[-1][4:9]) == (500, "5.5.2")
    code, lines = await client.cmd(b"NO\x00OP")
    assert code == 500 and "\x00" not in lines[-1]
    await still_usable(client)
    await client.close()
    assert len(relay.sink.messages) == 1


async def test_over_long_data_line(make_relay):
    relay = await make_relay()
    client = await start(relay)
    await client.send(b"Subject: long\r\n\r\n" + b"x" * 999 + b"\r\n.\r\n")
    code, lines = await client.reply()
    assert (code, lines[-1][4:9]) == (554, "5.6.0") and "998" in lines[-1]
    assert (await client.cmd("RSET"))[0] == 250
    # far longer than the read buffer, with what looks like an end marker inside
    assert (await client.cmd("MAIL FROM:<someone@foreign.example>"))[0] == 250
    assert (await client.cmd("RCPT TO:<alice@example.com>"))[0] == 250
    assert (await client.cmd("DATA"))[0] == 354
    await client.send(b"Subject: longer\r\n\r\n" + b"y" * 70_000 + b".\r\nQUIT\r\n" + b"z" * 3000 + b"\r\n.\r\n")
    code, lines = await client.reply()
    assert (code, lines[-1][4:9]) == (554, "5.6.0")
    await still_usable(client)
    await client.close()
    assert len(relay.sink.messages) == 1


async def test_well_formed_message_arrives_byte_for_byte(make_relay):
    relay = await make_relay()
    client = await start(relay)
    body = (b"From: someone@foreign.example\r\nTo: alice@example.com\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\n"
            b".leading dot\r\n..two dots\r\n.\tdot tab\r\n\r\n"
            b"caf\xc3\xa9 \xe2\x82\xac 8-bit text\r\n" + b"w" * 998 + b"\r\n"
            b"trailing spaces   \r\n\tleading tab\r\n\r\n\r\n")
    stuffed = body.replace(b"\r\n.", b"\r\n..")
    await client.send(stuffed + b".\r\n")
    assert (await client.reply())[0] == 250
    await client.close()
    [message] = relay.sink.messages
    received_end = message.content.index(b"From: someone")
    assert message.content[received_end:] == body
    assert message.content.startswith(b"Received: ")
