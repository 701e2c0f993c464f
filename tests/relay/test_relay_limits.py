"""Limits, each with its own clear reply: message size (declared and lied
about), recipients per message, per-client rate, connections, commands per
session."""
from __future__ import annotations

import smtplib

import pytest

from relay_helpers import RawClient, in_thread, smtp_client


async def send_data(client: RawClient, body: bytes) -> tuple[int, list[str]]:
    code, _ = await client.cmd("DATA")
    assert code == 354
    await client.send(body + b".\r\n")
    return await client.reply()


async def test_declared_size_over_limit(make_relay):
    relay = await make_relay(relay={"max_message_bytes": 2000})

    def send():
        with smtp_client(relay.smtp) as client:
            assert client.esmtp_features["size"] == "2000"
            client.sendmail("someone@foreign.example", ["alice@example.com"], b"x" * 3000)

    with pytest.raises(smtplib.SMTPSenderRefused) as info:
        await in_thread(send)
    assert info.value.smtp_code == 552 and info.value.smtp_error.startswith(b"5.3.4")
    assert relay.sink.messages == []


async def test_size_enforced_when_the_client_lies(make_relay):
    relay = await make_relay(relay={"max_message_bytes": 2000})
    client = await RawClient.connect(relay.smtp)
    await client.cmd("EHLO client.example")
    assert (await client.cmd("MAIL FROM:<someone@foreign.example> SIZE=100"))[0] == 250
    assert (await client.cmd("RCPT TO:<alice@example.com>"))[0] == 250
    code, lines = await send_data(client, b"Subject: big\r\n\r\n" + b"y" * 78 + b"\r\n" * 1 + (b"z" * 78 + b"\r\n") * 200)
    assert (code, lines[-1][4:9]) == (552, "5.3.4")
    # the session goes on, and a message within the limit is accepted
    assert (await client.cmd("MAIL FROM:<someone@foreign.example>"))[0] == 250
    assert (await client.cmd("RCPT TO:<alice@example.com>"))[0] == 250
    assert (await send_data(client, b"Subject: small\r\n\r\nok\r\n"))[0] == 250
    await client.close()
    assert [m.content.endswith(b"Subject: small\r\n\r\nok\r\n") for m in relay.sink.messages] == [True]


async def test_recipient_limit(make_relay):
    relay = await make_relay(relay={"max_recipients": 3})
    client = await RawClient.connect(relay.smtp)
    await client.cmd("EHLO client.example")
    await client.cmd("MAIL FROM:<someone@foreign.example>")
    for rcpt in ("alice@example.com", "bob@example.com", "postmaster@example.net"):
        assert (await client.cmd(f"RCPT TO:<{rcpt}>"))[0] == 250
    code, lines = await client.cmd("RCPT TO:<alice+x@example.com>")
    assert (code, lines[-1][4:9]) == (452, "4.5.3")
    assert (await send_data(client, b"Subject: x\r\n\r\nx\r\n"))[0] == 250
    await client.close()
    assert relay.sink.messages[0].rcpt_tos == ["alice@example.com", "bob@example.com", "postmaster@example.net"]


async def test_rate_limit_per_client_with_injected_clock(make_relay):
    now = [1_700_000_000.0]
    relay = await make_relay(relay={"rate_limit_messages": 2, "rate_limit_period_seconds": 60},
                             clock=lambda: now[0])

    def send(n):
        with smtp_client(relay.smtp) as client:
            for _ in range(n):
                client.sendmail("someone@foreign.example", ["alice@example.com"], b"Subject: x\r\n\r\nx\r\n")

    await in_thread(send, 2)
    with pytest.raises(smtplib.SMTPSenderRefused) as info:
        await in_thread(send, 1)
    assert info.value.smtp_code == 450 and info.value.smtp_error.startswith(b"4.7.1")
    now[0] += 30
    with pytest.raises(smtplib.SMTPSenderRefused):
        await in_thread(send, 1)
    now[0] += 31  # the first two are now more than a period old
    await in_thread(send, 2)
    assert len(relay.sink.messages) == 4
    assert relay.service.context.metrics.value("relay_rejections_total", reason="rate_limited") == 2


async def test_connections_per_client(make_relay):
    relay = await make_relay(relay={"max_connections_per_client": 2})
    first = await RawClient.connect(relay.smtp)
    second = await RawClient.connect(relay.submission)  # the limit spans the listeners
    third = await RawClient.connect(relay.smtp, greet=False)
    code, lines = await third.reply()
    assert (code, lines[-1][4:9]) == (421, "4.7.0")
    assert await third.closed()
    await third.close()
    await first.cmd("QUIT")
    await first.close()
    fourth = await RawClient.connect(relay.smtp)  # a slot is free again
    assert (await fourth.cmd("NOOP"))[0] == 250
    for c in (second, fourth):
        await c.close()


async def test_connections_total(make_relay):
    relay = await make_relay(relay={"max_connections": 1})
    first = await RawClient.connect(relay.smtp)
    second = await RawClient.connect(relay.smtp, greet=False)
    code, lines = await second.reply()
    assert code == 421 and "too many connections" in lines[-1]
    assert await second.closed()
    await second.close()
    await first.close()


async def test_commands_per_session(make_relay):
    relay = await make_relay(relay={"max_commands_per_session": 5})
    client = await RawClient.connect(relay.smtp)
    assert (await client.cmd("EHLO client.example"))[0] == 250
    for _ in range(4):
        assert (await client.cmd("NOOP"))[0] == 250
    code, lines = await client.cmd("NOOP")
    assert (code, lines[-1][4:9]) == (421, "4.7.0")
    assert await client.closed()
    await client.close()


async def test_long_command_line(make_relay):
    relay = await make_relay()
    client = await RawClient.connect(relay.smtp)
    await client.cmd("EHLO client.example")
    code, lines = await client.cmd("NOOP " + "x" * 600)
    assert (code, lines[-1][4:9]) == (500, "5.5.2")
    code, lines = await client.cmd("NOOP " + "x" * 5000)  # longer than the read buffer
    assert (code, lines[-1][4:9]) == (500, "5.5.2")
    assert (await client.cmd("NOOP"))[0] == 250
    await client.close()
