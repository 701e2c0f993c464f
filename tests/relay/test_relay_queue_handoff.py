"""The hand-off to the queue: the client hears 250 only when the queue said
250 for every recipient; the queue down, slow, full or partly refusing means
a 4xx and the client keeps the message; readiness follows the queue; the
side port reports what happened."""
from __future__ import annotations

import asyncio
import json
import smtplib
from collections import deque

import aiohttp
import pytest

from relay_helpers import RawClient, in_thread, smtp_client

from correo_server.config import Listen
from correo_server.relay.handoff import QueueClient

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


PIPELINED = pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "one-by-one"])


@PIPELINED
async def test_queue_full_refuses_recipients_before_data(make_relay, pipelining):
    relay = await make_relay()
    relay.sink.pipelining = pipelining
    relay.sink.rcpt_reply = lambda rcpt: "452 4.3.1 Insufficient system storage"
    with pytest.raises(smtplib.SMTPDataError) as info:
        await in_thread(send, relay.smtp, ("alice@example.com", "bob@example.com"))
    assert (info.value.smtp_code, info.value.smtp_error[:5]) == (452, b"4.3.1")
    assert relay.sink.messages == []
    relay.sink.rcpt_reply = None
    assert await in_thread(send, relay.smtp) == {}  # the connection (or a new one) still works
    assert len(relay.sink.messages) == 1


@PIPELINED
async def test_a_recipient_refused_by_the_queue_means_nothing_is_kept(make_relay, pipelining):
    """The queue took one recipient and refused the other at RCPT: with a
    pipelined DATA it already said 354, so the relay hangs up rather than send
    the message; either way the queue keeps nothing and the client retries."""
    relay = await make_relay()
    relay.sink.pipelining = pipelining
    relay.sink.rcpt_reply = lambda rcpt: "450 4.2.1 try later" if rcpt.startswith("bob") else None
    with pytest.raises(smtplib.SMTPDataError) as info:
        await in_thread(send, relay.smtp, ("alice@example.com", "bob@example.com"))
    assert info.value.smtp_code == 451
    assert relay.sink.messages == []
    assert "DATA-END" not in relay.sink.commands
    relay.sink.rcpt_reply = None
    assert await in_thread(send, relay.smtp, ("alice@example.com", "bob@example.com")) == {}
    assert [m.rcpt_tos for m in relay.sink.messages] == [["alice@example.com", "bob@example.com"]]


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
    assert set(status) == {"service", "ready", "time", "accepted", "rejected", "refused"}  # refused: by domain and reason
    assert (status["service"], status["ready"], status["accepted"], status["rejected"]) == ("relay", True, 1, 1)
    code, metrics = await get(relay.ports["http"], "/metrics")
    assert 'correo_relay_messages_accepted_total{listener="smtp"} 1' in metrics
    assert 'correo_relay_rejections_total{reason="relay_denied"} 1' in metrics
    assert 'correo_relay_connections_total{listener="smtp"} 2' in metrics
    assert "correo_relay_received_bytes_total" in metrics
    assert "correo_relay_queue_up 1" in metrics
    assert (await get(relay.ports["http"], "/healthz"))[0] == 200


class _ScriptedLMTP:
    """A raw LMTP server on loopback that records each read it gets and
    answers from a script: what the relay's client puts on the wire."""

    def __init__(self, replies: dict[str, str]) -> None:
        self.replies = replies
        self.reads: list[bytes] = []
        self.server = None

    async def _serve(self, reader, writer) -> None:
        writer.write(b"220 queue.test LMTP\r\n")
        rcpts = 0
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            self.reads.append(chunk)
            out = []
            for line in chunk.split(b"\r\n")[:-1]:
                verb = line.split(b" ", 1)[0].split(b":", 1)[0].upper().decode()
                if verb == "LHLO":
                    out.append("250-queue.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES")
                elif verb == "MAIL":
                    rcpts = 0
                if verb in self.replies:
                    out.append(self.replies[verb])
                    rcpts += verb == "RCPT"
                elif line == b".":
                    out.extend(["250 2.0.0 Ok: queued as Q1"] * rcpts)
            if out:
                writer.write(("\r\n".join(out) + "\r\n").encode())

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.server.close()


async def test_the_hand_off_pipelines_mail_rcpt_and_data_into_one_write():
    fake = _ScriptedLMTP({"MAIL": "250 2.1.0 OK", "RCPT": "250 2.1.5 OK", "DATA": "354 go ahead"})
    port = await fake.start()
    client = QueueClient(Listen("127.0.0.1", port), local_hostname="relay.test", timeout=5)
    try:
        outcome = await client.deliver("a@remote.test", ["x@example.com", "y@example.com"], b"Subject: s\r\n\r\nb\r\n")
    finally:
        await client.close()
        await fake.stop()
    assert outcome.stage == "data" and outcome.queued_as == "Q1"
    group = next(r for r in fake.reads if r.startswith(b"MAIL"))
    assert group.split(b"\r\n")[:4] == [b"MAIL FROM:<a@remote.test>", b"RCPT TO:<x@example.com>",
                                        b"RCPT TO:<y@example.com>", b"DATA"]


async def test_a_pipelined_data_answered_354_after_a_refusal_gets_no_message():
    fake = _ScriptedLMTP({"MAIL": "250 2.1.0 OK", "RCPT": "550 5.1.1 no such user", "DATA": "354 go ahead"})
    port = await fake.start()
    client = QueueClient(Listen("127.0.0.1", port), local_hostname="relay.test", timeout=5)
    try:
        outcome = await client.deliver("a@remote.test", ["x@example.com"], b"Subject: secret\r\n\r\nb\r\n")
        await asyncio.sleep(0.05)
    finally:
        await client.close()
        await fake.stop()
    assert outcome.stage == "rcpt" and outcome.replies[0].code == 550
    assert not any(b"secret" in r for r in fake.reads)
    assert client._idle == deque()  # that connection is not reused
