"""The conversation itself: what EHLO advertises, enhanced status codes on
every reply, plain old HELO clients, idle timeouts."""
from __future__ import annotations

import asyncio
import base64
import gc
import re

from relay_helpers import PASSWORDS, RawClient

ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}( |$)")


async def test_ehlo_advertises_the_extensions(make_relay):
    relay = await make_relay(tls=True, relay={"max_message_bytes": 12345})
    client = await RawClient.connect(relay.smtp)
    code, lines = await client.cmd("EHLO client.example")
    assert code == 250
    assert [line[4:] for line in lines] == ["mx.example.com", "PIPELINING", "SIZE 12345", "8BITMIME", "SMTPUTF8",
                                            "ENHANCEDSTATUSCODES", "STARTTLS"]
    await client.close()
    client = await RawClient.connect(relay.submission)
    code, lines = await client.cmd("EHLO client.example")
    assert lines[-1] == "250 AUTH PLAIN LOGIN"  # loopback: plaintext login allowed by default
    await client.close()


def help_commands(lines: list[str]) -> list[str]:
    return lines[-1].split("Supported commands: ", 1)[1].split()


async def test_help_lists_only_what_the_port_offers(make_relay):
    """Port 25 refuses AUTH (503, use submission): HELP does not list it.
    STARTTLS is listed until TLS is on, as in EHLO."""
    relay = await make_relay(tls=True)
    client = await RawClient.connect(relay.smtp)
    await client.cmd("EHLO client.example")
    code, lines = await client.cmd("HELP")
    assert code == 250 and "AUTH" not in help_commands(lines) and "STARTTLS" in help_commands(lines)
    assert "MAIL" in help_commands(lines) and "RCPT" in help_commands(lines)
    assert (await client.cmd("HELP AUTH"))[0] == 501  # "not a command here", with the list
    assert (await client.cmd("AUTH PLAIN"))[0] == 503
    await client.close()

    client = await RawClient.connect(relay.submission)
    await client.cmd("EHLO client.example")
    code, lines = await client.cmd("HELP")
    assert {"AUTH", "STARTTLS"} <= set(help_commands(lines))
    code, lines = await client.cmd("HELP AUTH")
    assert code == 250 and "AUTH <mechanism>" in lines[-1]
    await client.close()

    client = await RawClient.connect(relay.ports["smtps"], tls=True)
    await client.cmd("EHLO client.example")
    code, lines = await client.cmd("HELP")
    assert "AUTH" in help_commands(lines) and "STARTTLS" not in help_commands(lines)  # TLS is on already
    await client.close()


async def test_every_reply_carries_an_enhanced_status_code(make_relay):
    relay = await make_relay()
    client = await RawClient.connect(relay.submission)
    plain = base64.b64encode(b"\0alice@example.com\0" + PASSWORDS["alice@example.com"].encode()).decode()
    commands = ["MAIL FROM:<alice@example.com>", "HELO", "EHLO", "EHLO client.example", "NOOP", "HELP",
                "VRFY alice@example.com", "EXPN staff", "RCPT TO:<x@foreign.example>", "DATA",
                "AUTH PLAIN " + base64.b64encode(b"\0alice@example.com\0wrong").decode(),
                "AUTH PLAIN " + plain, "MAIL FROM:<bob@example.com>", "MAIL FROM:<alice@example.com> SIZE=x",
                "MAIL FROM:<alice@example.com>", "MAIL FROM:<alice@example.com>", "RCPT TO:<bad",
                "RCPT TO:<friend@foreign.example> NOTIFY=NEVER", "RCPT TO:<friend@foreign.example>",
                "DATA extra", "STARTTLS", "RSET x", "RSET", "BDAT 10 LAST", "QUIT"]
    for command in commands:
        code, lines = await client.cmd(command)
        assert code, command
        if command == "HELP":
            assert "MAIL" in lines[-1] and "STARTTLS" not in lines[-1]  # no TLS configured
        if command.startswith("EHLO client"):
            continue  # the EHLO reply lists extensions (RFC 2034 exempts it)
        for line in lines:
            assert ENHANCED.match(line), (command, line)
    await client.close()


async def test_helo_client(make_relay):
    relay = await make_relay()
    client = await RawClient.connect(relay.smtp)
    code, lines = await client.cmd("HELO old.example")
    assert lines == ["250 mx.example.com"]
    code, lines = await client.cmd("MAIL FROM:<someone@foreign.example> SIZE=10")
    assert code == 501  # parameters need EHLO
    assert (await client.cmd("MAIL FROM:<someone@foreign.example>"))[0] == 250
    assert (await client.cmd("RCPT TO:<alice@example.com>"))[0] == 250
    assert (await client.cmd("DATA"))[0] == 354
    await client.send(b"Subject: old\r\n\r\nold\r\n.\r\n")
    assert (await client.reply())[0] == 250
    await client.close()
    assert b"from old.example (unknown [127.0.0.1])\r\n\tby mx.example.com (correo) with SMTP id" in \
        relay.sink.messages[0].content


async def test_greeting_and_idle_timeout(make_relay):
    relay = await make_relay(relay={"timeout_seconds": 1})
    client = await RawClient.connect(relay.smtp, greet=False)
    code, lines = await client.reply()
    assert lines == ["220 mx.example.com ESMTP correo"]
    code, lines = await client.reply(timeout=5)
    assert (code, lines[-1][4:9]) == (421, "4.4.2")
    assert await client.closed()
    await client.close()


async def test_the_idle_timeout_counts_from_the_last_input(make_relay):
    relay = await make_relay(relay={"timeout_seconds": 1})
    client = await RawClient.connect(relay.smtp)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(3):  # active for longer than the timeout: still served
        await asyncio.sleep(0.6)
        assert (await client.cmd("NOOP"))[0] == 250
    assert (await client.cmd("EHLO client.example"))[0] == 250
    assert (await client.cmd("MAIL FROM:<someone@foreign.example>"))[0] == 250
    assert (await client.cmd("RCPT TO:<alice@example.com>"))[0] == 250
    assert (await client.cmd("DATA"))[0] == 354
    for _ in range(3):  # a slow message is not an idle session
        await asyncio.sleep(0.6)
        await client.send(b"Subject: slow\r\n")
    await client.send(b"\r\nbody\r\n.\r\n")
    assert (await client.reply())[0] == 250
    last = loop.time()
    code, lines = await client.reply(timeout=5)
    assert (code, lines[-1][4:9]) == (421, "4.4.2")
    assert 0.9 <= loop.time() - last <= 2.5 and loop.time() - start > 4
    assert await client.closed()
    await client.close()


async def test_stop_lets_a_message_in_flight_finish_and_closes_idle_sessions(make_relay):
    relay = await make_relay()
    relay.service.grace = 5.0
    relay.sink.delay = 0.5  # the queue takes its time with the message in flight
    idle = await RawClient.connect(relay.smtp)
    busy = await RawClient.connect(relay.smtp)
    await busy.cmd("EHLO client.example")
    await busy.cmd("MAIL FROM:<someone@foreign.example>")
    await busy.cmd("RCPT TO:<alice@example.com>")
    await busy.cmd("DATA")
    await busy.send(b"Subject: in flight\r\n\r\nx\r\n.\r\n")
    await asyncio.sleep(0.1)  # the hand-off has started
    stopping = asyncio.create_task(relay.service.stop())
    code, lines = await busy.reply()
    assert code == 250  # the queue has it, and the client hears so
    assert (await busy.reply())[0] == 421
    code, lines = await idle.reply()
    assert (code, lines[-1][4:9]) == (421, "4.3.2")
    await stopping
    assert len(relay.sink.messages) == 1
    for client in (idle, busy):
        await client.close()


async def test_failed_tls_handshake_leaves_the_server_well(make_relay):
    relay = await make_relay(tls=True)
    client = await RawClient.connect(relay.submission)
    await client.cmd("EHLO client.example")
    assert (await client.cmd("STARTTLS"))[0] == 220
    await client.send(b"this is not a TLS ClientHello\r\n" * 10)
    assert await client.closed()
    await client.close()
    again = await RawClient.connect(relay.submission)
    assert (await again.cmd("EHLO client.example"))[0] == 250
    await again.close()
    assert relay.service.context.gate.total <= 1


async def test_finished_sessions_leave_nothing_for_the_garbage_collector(make_relay):
    """Each connection's objects go as soon as it ends (aiosmtpd's tables
    of bound methods would otherwise keep them in a cycle until the
    collector runs): memory and CPU do not grow with the connection rate."""
    from correo_server.relay.smtp import RelaySMTP

    relay = await make_relay()
    gc.collect()
    gc.disable()
    try:
        for quit_politely in (True, False, True):
            client = await RawClient.connect(relay.smtp)
            await client.cmd("EHLO client.example")
            await client.cmd("MAIL FROM:<someone@foreign.example>")
            await client.cmd("RCPT TO:<alice@example.com>")
            await client.cmd("DATA")
            await client.send(b"Subject: hello\r\n\r\nx\r\n.\r\n")
            assert (await client.reply())[0] == 250
            if quit_politely:
                assert (await client.cmd("QUIT"))[0] == 221
            await client.close()
        deadline = asyncio.get_running_loop().time() + 10
        while asyncio.get_running_loop().time() < deadline:
            alive = [o for o in gc.get_objects() if isinstance(o, RelaySMTP)]
            if not alive:
                break
            await asyncio.sleep(0.05)
        assert not alive
        assert len(relay.sink.messages) == 3
    finally:
        gc.enable()
