"""Exactly once between relay and queue: the relay's message key
(``MAIL FROM:<...> XDELIVERY-KEY=...``) of a message still in the spool
means the client sent it again after the relay answered ``451`` (the queue
died before its ``250``): the first copy's id is the answer, and the spool
keeps one copy (:mod:`correo_server.deliverykeys`)."""
from __future__ import annotations

import asyncio

from queue_support import lmtp_send

from correo_server import deliverykeys


def held(h) -> int:
    return len(list(h.service.runner.state))


async def test_a_message_offered_again_with_its_key_is_not_spooled_twice(harness):
    await harness.start()
    intake = harness.service.runner.intake
    rcpts = tuple(intake.expand("bob@example.com"))
    data = b"Subject: once\r\nMessage-ID: <k@example.org>\r\n\r\nhello\r\n"
    key = deliverykeys.message_key("a@example.org", ["bob@example.com"], data)
    first = await intake.accept("a@example.org", rcpts, data, key=key, schedule=False)
    again = await intake.accept("a@example.org", rcpts, data, key=key, schedule=False)
    other = await intake.accept("a@example.org", rcpts, data, schedule=False)
    assert again.id == first.id and other.id != first.id
    assert held(harness) == 2
    assert first.env.key == key and harness.service.spool is not None


async def test_the_queue_offers_the_extension_and_refuses_a_bad_key(harness):
    await harness.start()
    replies = await lmtp_send(harness.lmtp_port, "a@example.org", ["bob@example.com"], b"Subject: x\r\n\r\nx\r\n")
    assert all(r.startswith("250") for r in replies.values())
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.lmtp_port)
    await reader.readline()
    writer.write(b"LHLO relay.test\r\n")
    lines = []
    while True:
        line = await asyncio.wait_for(reader.readline(), 15)
        lines.append(line)
        if line[3:4] != b"-":
            break
    assert any(deliverykeys.EXTENSION.encode() in line for line in lines)
    writer.write(b"MAIL FROM:<a@example.org> XDELIVERY-KEY=../../x\r\n")
    assert (await asyncio.wait_for(reader.readline(), 15)).startswith(b"501")
    writer.close()


def test_keys_are_the_ones_earlier_versions_persisted():
    """Keys are kept across restarts and upgrades (the mailstore's index
    rows and file names): the same message and mailbox give the same key
    as before, base32 of the digest in lower case."""
    import base64
    import hashlib
    import os

    assert deliverykeys.delivery_key("0190ABCDEF12345", "Bob@Example.com") == "dt7dhgrihosazkuie5dnohr3"
    data = b"Message-ID: <k@example.org>\r\n\r\nhi\r\n"
    assert deliverykeys.message_key("a@example.org", ["bob@example.com", "c@example.com"], data) \
        == "mbuowmi4xyheoaeyva7yjra6"
    for _ in range(2000):
        digest = os.urandom(15)
        assert deliverykeys._b32(digest) == base64.b32encode(digest).decode("ascii").lower()
    h = hashlib.blake2b(digest_size=15, person=b"correo-key")
    assert deliverykeys.valid(deliverykeys._b32(h.digest()))
