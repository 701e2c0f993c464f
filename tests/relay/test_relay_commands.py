"""The relay's command table: every command it serves answers, HELP names
them, and a client that sends nothing but unknown commands is let go."""
from __future__ import annotations

from relay_helpers import RawClient

import correo_server.relay.smtp as relay_smtp


async def test_every_command_the_relay_serves_answers(make_relay):
    served = {n[5:] for n in dir(relay_smtp.RelaySMTP) if n.startswith("smtp_")}
    assert {"EHLO", "HELO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "HELP", "AUTH"} <= served
    relay = await make_relay()
    client = await RawClient.connect(relay.smtp)
    code, lines = await client.cmd("HELP")
    assert code == 250 and set(lines[-1].split()) >= {"EHLO", "MAIL", "RCPT", "DATA", "NOOP", "VRFY", "HELP"}
    assert (await client.cmd("EHLO client.example"))[0] == 250
    for command, expected in (("NOOP", 250), ("noop", 250), ("RSET", 250), ("VRFY alice", 252), ("XYZZY", 500),
                              ("EXPN staff", 502), ("AUTH PLAIN", 503)):  # AUTH on port 25 sends to submission
        code, lines = await client.cmd(command)
        assert code == expected, (command, lines)
    assert (await client.cmd("QUIT"))[0] == 221
    assert await client.closed()
    await client.close()


async def test_unknown_commands_are_answered_then_the_client_is_let_go(make_relay):
    relay = await make_relay()
    client = await RawClient.connect(relay.smtp)
    for i in range(4):
        code, lines = await client.cmd(f"BOGUS{i}")
        assert code == 500 and lines[-1].startswith("500 5.5.2")
    assert (await client.cmd("NOOP"))[0] == 250  # still served
    code, lines = await client.cmd("BOGUS")
    assert (code, lines[-1][4:9]) == (502, "5.5.1")
    assert await client.closed()
    await client.close()


async def test_pipelined_commands_are_answered_in_order(make_relay):
    """RFC 2920: the replies to a pipelined group come back in order, and
    the message right after the group's DATA is the message."""
    relay = await make_relay()
    client = await RawClient.connect(relay.smtp)
    await client.send(b"EHLO client.example\r\nMAIL FROM:<someone@foreign.example>\r\n"
                      b"RCPT TO:<alice@example.com>\r\nRCPT TO:<nobody@foreign.example>\r\nDATA\r\n")
    codes = [(await client.reply())[0] for _ in range(5)]
    assert codes == [250, 250, 250, 554, 354]
    await client.send(b"Subject: pipelined\r\n\r\nhello\r\n.\r\nQUIT\r\n")
    assert (await client.reply())[0] == 250
    assert (await client.reply())[0] == 221
    await client.close()
    assert relay.sink.messages[0].content.endswith(b"Subject: pipelined\r\n\r\nhello\r\n")
