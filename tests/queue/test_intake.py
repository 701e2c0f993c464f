"""The LMTP door the relay hands messages to: what it acknowledges, when, and
what it refuses."""
from __future__ import annotations

import asyncio
import errno
import os
import threading

from queue_support import lmtp_send, message

from correo_server.queue import spool as spoolmod


def spooled(h) -> list[str]:
    """The messages live in the spool."""
    return sorted(h.service.spool.locs)


def on_disk(h) -> list[str]:
    """The ids of every complete record in the spool's segments."""
    ids = []
    for path in sorted((h.root / "spool").glob("data.*")):
        records, _good, _problem = spoolmod._parse_records(path.read_bytes())
        ids += [env.id for env, *_ in records]
    return ids


async def test_each_recipient_gets_250_with_the_queue_id_and_the_file_is_on_disk(harness):
    await harness.start()
    replies = await harness.send("alice@example.com", ["bob@example.com", "erin@other.org"])
    assert all(r.startswith("250 2.0.0") for r in replies.values()), replies
    ids = {r.rsplit(" ", 1)[1] for r in replies.values()}
    assert len(ids) == 1
    (qid,) = ids
    # The fake clock has not moved: nothing delivered yet... but the runner
    # attempts new mail at once, so either way the message was on disk first.
    await harness.settle()
    assert [r for r, _ in harness.mailstore.delivered] == ["bob@example.com", "erin@other.org"]
    assert not spooled(harness)  # delivered everywhere: removed


async def test_no_250_before_the_segment_is_fdatasynced(harness, monkeypatch):
    await harness.start()
    gate = threading.Event()
    synced: list[list[str]] = []
    real = spoolmod.os.fdatasync

    def slow_fdatasync(fd):
        gate.wait(10)
        synced.append(on_disk(harness))
        real(fd)

    monkeypatch.setattr(spoolmod.os, "fdatasync", slow_fdatasync)
    send = asyncio.create_task(harness.send("alice@example.com", ["bob@example.com"]))
    await asyncio.sleep(0.3)
    assert not send.done(), "acknowledged before the segment was fdatasynced"
    gate.set()
    replies = await send
    assert replies["bob@example.com"].startswith("250 ")
    assert synced and replies["bob@example.com"].rsplit(" ", 1)[1] in synced[0]


async def test_messages_arriving_together_share_a_sync_and_each_is_on_disk_before_its_250(harness, monkeypatch):
    """Group commit: many sessions at once share fdatasyncs, and no one hears
    250 before the record of its own message was synced."""
    await harness.start()
    synced: set[str] = set()
    syncs = 0
    real = spoolmod.os.fdatasync

    def recording_fdatasync(fd):
        nonlocal syncs
        real(fd)
        syncs += 1
        synced.update(on_disk(harness))

    monkeypatch.setattr(spoolmod.os, "fdatasync", recording_fdatasync)

    async def one(i: int) -> str:
        replies = await harness.send(f"s{i}@remote.test", ["bob@example.com"])
        reply = replies["bob@example.com"]
        assert reply.startswith("250 "), reply
        qid = reply.rsplit(" ", 1)[1]
        assert qid in synced, "250 before the message was synced"
        return qid

    ids = await asyncio.gather(*(one(i) for i in range(20)))
    assert len(set(ids)) == 20
    assert syncs < 20


async def test_unknown_hosted_recipient_is_refused_at_rcpt_and_others_still_accepted(harness):
    await harness.start()
    replies = await harness.send("someone@remote.test", ["nobody@example.com", "bob@example.com",
                                                         "ghost@example.net"])
    assert replies["nobody@example.com"].startswith("550 5.1.1")
    assert replies["ghost@example.net"].startswith("550 5.1.1")  # alias domain, unknown user
    assert replies["bob@example.com"].startswith("250 ")


async def test_aliases_alias_domains_and_forwards_are_expanded_at_enqueue(harness):
    harness.zone.mx("remote.test", (10, "mx1.remote.test"))
    mx = await harness.add_mx("mx1.remote.test", "127.0.0.2")
    await harness.start()
    replies = await harness.send("x@remote.test", ["postmaster@example.com", "bob@example.net",
                                                   "carol@example.com", "dave@example.com"])
    assert all(r.startswith("250") for r in replies.values()), replies
    await harness.settle()
    local = sorted(r for r, _ in harness.mailstore.delivered)
    # postmaster -> alice; bob in the alias domain -> bob; carol keeps a copy; dave does not
    assert local == ["alice@example.com", "bob@example.com", "carol@example.com"]
    remote = sorted(r for m in mx.messages for r in m.recipients)
    assert remote == ["carol@remote.test", "dave@remote.test"]
    assert all(m.sender == "x@remote.test" for m in mx.messages)


async def test_message_over_the_size_limit_gets_552_5_3_4(harness):
    await harness.start(max_message_bytes=2000)
    big = message(body=("x" * 70 + "\n") * 100)
    replies = await harness.send("alice@example.com", ["bob@example.com", "erin@other.org"], big)
    assert len(replies) == 2
    for r in replies.values():
        assert r.startswith("552 5.3.4"), r
    assert not spooled(harness)
    # The connection was usable after that: a small message goes through.
    ok = await harness.send("alice@example.com", ["bob@example.com"])
    assert ok["bob@example.com"].startswith("250")


async def test_announced_size_over_the_limit_is_refused_at_mail(harness):
    await harness.start(max_message_bytes=2000)
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.lmtp_port)
    await reader.readline()
    writer.write(b"LHLO relay\r\n")
    while (await reader.readline())[3:4] == b"-":
        pass
    writer.write(b"MAIL FROM:<alice@example.com> SIZE=999999\r\n")
    line = await reader.readline()
    assert line.startswith(b"552 5.3.4"), line
    writer.close()


async def test_free_space_below_the_minimum_is_452_4_3_1(harness):
    await harness.start(min_free_bytes=1 << 62)
    replies = await harness.send("alice@example.com", ["bob@example.com"])
    assert replies["bob@example.com"].startswith("452 4.3.1")
    assert not spooled(harness)


async def test_disk_full_while_writing_is_452_and_leaves_nothing_behind(harness, monkeypatch):
    await harness.start()
    await harness.send("alice@example.com", ["bob@example.com"])  # a segment exists, with one record
    before = on_disk(harness)
    real_write = os.write

    def full(fd, data):
        if "/data." in os.readlink(f"/proc/self/fd/{fd}"):
            real_write(fd, bytes(data[: len(data) // 2]))  # half of it, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(spoolmod.os, "write", full)
    replies = await harness.send("alice@example.com", ["bob@example.com", "erin@other.org"])
    assert all(r.startswith("452 4.3.1") for r in replies.values()), replies
    assert on_disk(harness) == before  # the half record was cut off again
    for path in (harness.root / "spool").glob("data.*"):
        assert spoolmod._parse_records(path.read_bytes())[2] is None
    monkeypatch.setattr(spoolmod.os, "write", real_write)
    replies = await harness.send("alice@example.com", ["bob@example.com"])
    assert replies["bob@example.com"].startswith("250")
