"""The relay in front of the real queue (``correo_server.queue``): what the
client hears is what the queue wrote to disk, and the message travels on
(here to an LMTP sink playing the mailstore)."""
from __future__ import annotations

import asyncio
import dataclasses
import re
import smtplib

import pytest
import structlog

from correo_server import directory as dirmod
from correo_server.config import AuthSettings, Domain, Listen, QueueConfig, RelayConfig, ServerConfig
from correo_server.queue.service import QueueService
from correo_server.relay.service import RelayService
from relay_helpers import PASSWORDS, in_thread, smtp_client

LOCAL = Listen("127.0.0.1", 0)


@pytest.fixture
async def stack(tmp_path, sink, mailboxes):
    """A queue (spool under tmp_path) delivering to ``sink``, and a relay in front of it."""
    (tmp_path / "directory.yaml").write_text(dirmod.dump(mailboxes), encoding="utf-8")
    config = ServerConfig(
        name="t", hostname="mx.example.com", domains=(Domain("example.com", aliases=("example.net",)),),
        auth=AuthSettings(failure_delay_seconds=0.01),
        queue=QueueConfig(lmtp=LOCAL, http=LOCAL, mailstore=Listen("127.0.0.1", sink.port),
                          spool_dir=str(tmp_path / "spool"), min_free_bytes=0),
        relay=RelayConfig(smtp=LOCAL, submission=LOCAL, smtps=LOCAL, http=LOCAL),
        base_dir=str(tmp_path))
    queue = QueueService(config, str(tmp_path))
    queue_ports = await queue.start()
    config = dataclasses.replace(config, relay=dataclasses.replace(
        config.relay, queue=Listen("127.0.0.1", queue_ports["lmtp"])))
    relay = RelayService(config, str(tmp_path), handoff_timeout=10.0, grace=1.0)
    relay_ports = await relay.start()
    yield relay, relay_ports, queue
    await relay.stop()
    await queue.stop(grace=1.0)


async def wait_for(predicate, timeout: float = 30.0) -> None:
    """Generous: on a loaded machine a delivery can take seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


async def test_through_the_real_queue(stack, sink):
    relay, ports, queue = stack
    assert relay.ready()

    def send():
        with smtp_client(ports["smtp"]) as client:
            client.mail("someone@foreign.example")
            client.rcpt("alice@example.net")
            code, text = client.data(b"Subject: via queue\r\n\r\nhello\r\n")
        with smtp_client(ports["submission"]) as sub:
            sub.login("bob@example.com", PASSWORDS["bob@example.com"])
            sub.sendmail("bob@example.com", ["alice@example.com"], b"Subject: from bob\r\n\r\nhi\r\n")
        return code, text.decode()

    with structlog.testing.capture_logs() as events:
        code, text = await in_thread(send)
    assert code == 250
    queue_id = re.search(r"queued as (\S+)", text).group(1)
    await wait_for(lambda: len(sink.messages) == 2)
    assert queue.metrics.value("queue_enqueued_total") == 2
    # One id per message: the one the client was told is the queue's own and
    # the relay's Received header's (the e2e trail test follows the logs).
    assert queue_id in [e["queue_id"] for e in events if e["event"] == "queued"]
    assert not [e for e in events if "relay_id" in e]
    first = next(m for m in sink.messages if b"via queue" in m.content)
    assert first.rcpt_tos == ["alice@example.com"]
    assert first.content.startswith(b"Received: from client.test (unknown [127.0.0.1])\r\n"
                                    b"\tby mx.example.com (correo) with ESMTP id " + queue_id.encode() + b"\r\n")
    assert first.content.endswith(b"Subject: via queue\r\n\r\nhello\r\n")


async def test_unknown_recipient_at_the_relay_never_reaches_the_queue(stack, sink):
    relay, ports, queue = stack

    def send():
        with smtp_client(ports["smtp"]) as client:
            client.sendmail("someone@foreign.example", ["nobody@example.com"], b"Subject: x\r\n\r\nx\r\n")

    with pytest.raises(smtplib.SMTPRecipientsRefused):
        await in_thread(send)
    assert len(queue.state) == 0
