"""The LMTP door the relay hands messages to: what it acknowledges, when, and
what it refuses."""
from __future__ import annotations

import asyncio
import time
import errno
import os
import threading

from queue_support import after_restart, lmtp_send, message

from correo_server.queue import spool as spoolmod


def spooled(h) -> list[str]:
    """The messages the running queue holds."""
    return sorted(m.id for m in h.service.state)


def after_crash(h) -> dict[str, bytes]:
    """The messages a queue restarted on the spool as it is now would find."""
    return after_restart(h.root / "spool", h.root)


class Syncs:
    """Every sync the spool makes (fsync, fdatasync, of files and folders),
    and after each, what a queue restarted from the disk would find: a
    crash after that sync cannot lose those messages."""

    def __init__(self, h, monkeypatch, gate: threading.Event | None = None) -> None:
        self.h = h
        self.gate = gate
        self.durable: set[str] = set()
        self.count = 0
        for name in ("fsync", "fdatasync"):
            monkeypatch.setattr(spoolmod.os, name, self._wrap(getattr(os, name)))
        monkeypatch.setattr(spoolmod, "fsync_dir", self._wrap(spoolmod.fsync_dir))
        monkeypatch.setattr(spoolmod, "sync_filesystem", self._wrap(spoolmod.sync_filesystem))

    def _wrap(self, real):
        def sync(arg):
            if self.gate is not None:
                self.gate.wait(10)
            real(arg)
            self.count += 1
            self.durable.update(after_crash(self.h))
        return sync


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


async def test_no_250_before_the_message_is_synced_to_disk(harness, monkeypatch):
    await harness.start()
    gate = threading.Event()
    syncs = Syncs(harness, monkeypatch, gate)
    send = asyncio.create_task(harness.send("alice@example.com", ["bob@example.com"]))
    await asyncio.sleep(0.3)
    assert not send.done(), "acknowledged before the spool synced anything"
    gate.set()
    replies = await send
    assert replies["bob@example.com"].startswith("250 ")
    assert replies["bob@example.com"].rsplit(" ", 1)[1] in syncs.durable


async def test_messages_arriving_together_share_syncs_and_each_is_durable_before_its_250(harness, monkeypatch):
    """Group commit: many sessions at once share syncs, and no one hears 250
    before a restart from what was synced would find its message."""
    await harness.start()
    syncs = Syncs(harness, monkeypatch)

    async def one(i: int) -> str:
        replies = await harness.send(f"s{i}@remote.test", ["bob@example.com"])
        reply = replies["bob@example.com"]
        assert reply.startswith("250 "), reply
        qid = reply.rsplit(" ", 1)[1]
        assert qid in syncs.durable, "250 before the message was durable"
        return qid

    before = syncs.count
    ids = await asyncio.gather(*(one(i) for i in range(20)))
    assert len(set(ids)) == 20
    assert syncs.count - before < 20


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


async def greylisting_mx(h):
    """remote.test's MX answers 451 for now: its mail stays queued."""
    h.zone.mx("remote.test", (10, "mx1.remote.test"))
    mx1 = await h.add_mx("mx1.remote.test", "127.0.0.2")
    mx1.rcpt_reply = "451 4.7.1 greylisted"


async def test_disk_full_while_writing_is_452_and_leaves_nothing_behind(harness, monkeypatch):
    await greylisting_mx(harness)
    await harness.start()
    first = await harness.send("alice@example.com", ["bob@remote.test"], message("kept"))  # stays queued
    await harness.settle()
    before = after_crash(harness)
    assert list(before) == [first["bob@remote.test"].rsplit(" ", 1)[1]]
    spool_dir = str(harness.root / "spool")
    real_write = os.write

    def full(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").startswith(spool_dir):
            real_write(fd, bytes(data[: len(data) // 2]))  # half of it, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(spoolmod.os, "write", full)
    replies = await harness.send("alice@example.com", ["bob@example.com", "erin@other.org"])
    assert all(r.startswith("452 4.3.1") for r in replies.values()), replies
    assert spooled(harness) == list(before)
    monkeypatch.setattr(spoolmod.os, "write", real_write)
    assert after_crash(harness) == before  # nothing half-written is taken for a message
    assert not (harness.root / "spool" / "corrupt").exists()  # nor left for a person to look at
    replies = await harness.send("alice@example.com", ["bob@example.com"])
    assert replies["bob@example.com"].startswith("250")


async def test_a_write_that_cannot_be_cut_back_does_not_spoil_later_messages(harness, monkeypatch):
    """Disk full, and the half-written end cannot even be removed: the
    messages acknowledged afterwards are still all found after a crash."""
    await greylisting_mx(harness)
    await harness.start()
    spool_dir = str(harness.root / "spool")
    real_write, real_truncate = os.write, os.ftruncate

    def full(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").startswith(spool_dir):
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    def stuck(fd, size):
        raise OSError(errno.EIO, "I/O error")

    bodies = {}
    for i in range(2):
        reply = (await harness.send("alice@example.com", ["bob@remote.test"], message(f"before {i}")))
        bodies[reply["bob@remote.test"].rsplit(" ", 1)[1]] = f"before {i}"
    monkeypatch.setattr(spoolmod.os, "write", full)
    monkeypatch.setattr(spoolmod.os, "ftruncate", stuck)
    replies = await harness.send("alice@example.com", ["bob@remote.test"])
    assert replies["bob@remote.test"].startswith("452 4.3.1"), replies
    monkeypatch.setattr(spoolmod.os, "write", real_write)
    monkeypatch.setattr(spoolmod.os, "ftruncate", real_truncate)
    for i in range(2):
        reply = (await harness.send("alice@example.com", ["bob@remote.test"], message(f"after {i}")))
        assert reply["bob@remote.test"].startswith("250 "), reply
        bodies[reply["bob@remote.test"].rsplit(" ", 1)[1]] = f"after {i}"
    await harness.settle()
    found = after_crash(harness)
    assert sorted(found) == sorted(bodies)
    assert all(f"Subject: {subject}\r\n".encode() in found[qid] for qid, subject in bodies.items())


async def test_null_sender_and_internationalised_addresses_are_accepted(harness):
    await harness.start()
    replies = await harness.send("", ["bob@example.com"])
    assert replies["bob@example.com"].startswith("250")
    replies = await lmtp_send(harness.lmtp_port, "jürgen@exämple.de", ["bob@example.com"],
                              message(sender="jürgen@exämple.de").replace(b"Hi", "Grüße".encode()))
    assert replies["bob@example.com"].startswith("250")
    await harness.settle()
    senders = [m.sender for _, m in harness.mailstore.delivered]
    assert senders == ["<>", "jürgen@exämple.de"]
    assert "Grüße".encode() in harness.mailstore.delivered[1][1].data


async def test_messages_pass_through_byte_for_byte(harness):
    await harness.start()
    body = (b"From: a@example.com\r\nSubject: dots\r\n\r\n.leading dot\r\n..two dots\r\n"
            b"tab\tand trailing space \r\n\r\n.\r\nend\r\n")
    replies = await harness.send("alice@example.com", ["bob@example.com"], body)
    assert replies["bob@example.com"].startswith("250")
    await harness.settle()
    assert harness.mailstore.delivered[0][1].data == body


async def test_a_failed_sync_of_messages_and_events_together_loses_nothing_acknowledged(harness, monkeypatch):
    """Records and journal events written by one disk call are synced once
    (syncfs); when that fails, its messages get 4xx, its events are written
    again, and a restart finds exactly the messages that got 250."""
    await greylisting_mx(harness)
    await harness.start()
    failures = 0

    def failing(fd):
        nonlocal failures
        failures += 1
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(spoolmod, "sync_filesystem", failing)
    # Each append takes a little longer than on a fast disk, so that while one
    # disk call runs, new records and deferral events both wait for the next.
    write_all = spoolmod.Spool._write_all

    def slow_write_all(self, blob, sync=True):
        time.sleep(0.005)
        return write_all(self, blob, sync)

    monkeypatch.setattr(spoolmod.Spool, "_write_all", slow_write_all)

    async def one(i: int) -> tuple[str, str]:
        replies = await harness.send("alice@example.com", ["bob@remote.test"], message(f"m{i}"))
        return replies["bob@remote.test"], f"m{i}"

    # A stream of messages, each deferred at once: the deferral events of
    # the earlier ones and the records of the later ones share disk calls.
    # How soon the two meet depends on the machine's load: send until they do
    # (a few dozen messages on a quiet machine), with a generous ceiling.
    tasks = []
    for i in range(600):
        tasks.append(asyncio.create_task(one(i)))
        await asyncio.sleep(0 if i % 3 else 0.01)  # bursts of three, so records and events overlap
        if failures:
            break
    results = await asyncio.gather(*tasks)
    assert failures, "no disk call had both messages and events"
    assert all(r.startswith("250 ") or r.startswith("4") for r, _ in results), results
    assert any(r.startswith("4") for r, _ in results)
    monkeypatch.undo()
    await harness.settle()
    acked = {r.rsplit(" ", 1)[1]: subject for r, subject in results if r.startswith("250 ")}
    found = after_crash(harness)
    assert sorted(found) == sorted(acked)
    assert all(f"Subject: {subject}\r\n".encode() in found[qid] for qid, subject in acked.items())
    assert all(m.rcpts[0].attempt_count >= 1 for m in harness.service.state)  # the deferrals were recorded
    assert (await harness.send("alice@example.com", ["bob@remote.test"]))["bob@remote.test"].startswith("250 ")
