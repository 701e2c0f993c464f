"""The hand-off to the queue: the client hears 250 only when the queue said
250 for every recipient; the queue down, slow, full or partly refusing means
a 4xx and the client keeps the message; readiness follows the queue; the
side port reports what happened."""
from __future__ import annotations

import json
import smtplib

import aiohttp
import pytest

from relay_helpers import RawClient, in_thread, smtp_client

MESSAGE = b"Subject: handoff\r\n\r\nbody\r\n"


def send(port: int, rcpts=("alice@example.com",), message: bytes = MESSAGE):
    with smtp_client(port) as client:
        return client.sendmail("someone@foreign.example", list(rcpts), message)


async def get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}{path}") as response:
            return response.status, await response.text()


async def test_queue_down_then_back(make_relay):
    relay = await make_relay()
    assert (await get(relay.ports["http"], "/readyz"))[0] == 200
    await relay.sink.stop()
    with pytest.raises(smtplib.SMTPDataError) as info:
        await in_thread(send, relay.smtp)
    assert info.value.smtp_code == 451 and info.value.smtp_error.startswith(b"4.3.0")
    assert not await relay.service.check_queue()
    assert (await get(relay.ports["http"], "/readyz"))[0] == 503
    await relay.sink.start()  # same port
    assert await relay.service.check_queue()
    assert (await get(relay.ports["http"], "/readyz"))[0] == 200
    assert await in_thread(send, relay.smtp) == {}  # the client's retry
    assert len(relay.sink.messages) == 1


async def test_queue_slow(make_relay):
    relay = await make_relay(handoff_timeout=0.3)
    relay.sink.delay = 1.0
    with pytest.raises(smtplib.SMTPDataError) as info:
        await in_thread(send, relay.smtp)
    assert (info.value.smtp_code, info.value.smtp_error[:5]) == (451, b"4.3.0")
    relay.sink.delay = 0
    assert await in_thread(send, relay.smtp) == {}


async def test_queue_full_refuses_recipients_before_data(make_relay):
    relay = await make_relay()
    relay.sink.rcpt_reply = lambda rcpt: "452 4.3.1 Insufficient system storage"
    with pytest.raises(smtplib.SMTPDataError) as info:
        await in_thread(send, relay.smtp, ("alice@example.com", "bob@example.com"))
    assert (info.value.smtp_code, info.value.smtp_error[:5]) == (452, b"4.3.1")
    assert relay.sink.messages == []


async def test_partial_acceptance_at_the_queue_is_a_temporary_failure(make_relay):
    relay = await make_relay()
    relay.sink.data_reply = lambda rcpt: "451 4.3.0 disk trouble" if rcpt.startswith("bob") else None
    with pytest.raises(smtplib.SMTPDataError) as info:
        await in_thread(send, relay.smtp, ("alice@example.com", "bob@example.com"))
    assert (info.value.smtp_code, info.value.smtp_error[:5]) == (451, b"4.3.0")


async def test_permanent_refusal_at_the_queue_passes_through(make_relay):
    relay = await make_relay()
    relay.sink.data_reply = lambda rcpt: "552 5.3.4 Message too big for the queue"
    with pytest.raises(smtplib.SMTPDataError) as info:
        await in_thread(send, relay.smtp)
    assert (info.value.smtp_code, info.value.smtp_error[:5]) == (552, b"5.3.4")


async def test_connections_to_the_queue_are_reused_and_replaced_when_stale(make_relay):
    relay = await make_relay()
    connections = relay.sink.connections
    for _ in range(3):
        assert await in_thread(send, relay.smtp) == {}
    assert relay.sink.connections - connections <= 1
    await relay.sink.stop()  # drops the pooled connection
    await relay.sink.start()
    assert await in_thread(send, relay.smtp) == {}  # no 451: the stale connection is replaced
    assert len(relay.sink.messages) == 4


async def test_queue_gets_the_envelope(make_relay):
    relay = await make_relay()
    client = await RawClient.connect(relay.smtp)
    await client.cmd("EHLO client.example")
    await client.cmd("MAIL FROM:<someone@foreign.example> BODY=8BITMIME SMTPUTF8")
    await client.cmd("RCPT TO:<alice@example.com>")
    await client.cmd("RCPT TO:<ALICE@example.com>")  # the same mailbox twice: delivered once
    await client.cmd("RCPT TO:<bob@example.net>")
    await client.cmd("DATA")
    await client.send(b"Subject: x\r\n\r\n\xc3\xa9\r\n.\r\n")
    code, lines = await client.reply()
    assert code == 250 and "queued as Q" in lines[-1]
    await client.close()
    [message] = relay.sink.messages
    assert message.rcpt_tos == ["alice@example.com", "bob@example.net"]
    assert {"BODY=8BITMIME", "SMTPUTF8"} <= set(message.mail_options)
    assert any(option.startswith("SIZE=") for option in message.mail_options)


async def test_status_and_metrics(make_relay):
    relay = await make_relay()
    assert await in_thread(send, relay.smtp) == {}
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        await in_thread(send, relay.smtp, ("victim@foreign.example",))
    code, text = await get(relay.ports["http"], "/status")
    status = json.loads(text)
    assert code == 200
    assert set(status) == {"service", "ready", "time", "accepted", "rejected"}
    assert (status["service"], status["ready"], status["accepted"], status["rejected"]) == ("relay", True, 1, 1)
    code, metrics = await get(relay.ports["http"], "/metrics")
    assert 'correo_relay_messages_accepted_total{listener="smtp"} 1' in metrics
    assert 'correo_relay_rejections_total{reason="relay_denied"} 1' in metrics
    assert 'correo_relay_connections_total{listener="smtp"} 2' in metrics
    assert "correo_relay_received_bytes_total" in metrics
    assert "correo_relay_queue_up 1" in metrics
    assert (await get(relay.ports["http"], "/healthz"))[0] == 200
