"""The LMTP door the relay hands messages to: what it acknowledges, when, and
what it refuses."""
from __future__ import annotations

import asyncio
import errno
import os
import threading
from pathlib import Path

from queue_support import lmtp_send, message

from correo_server.queue import spool as spoolmod


def spooled(h) -> list[str]:
    return sorted(p.name for p in (h.root / "spool" / "msg").iterdir())


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


async def test_no_250_before_the_spool_folder_is_fsynced(harness, monkeypatch):
    await harness.start()
    msg_dir = harness.root / "spool" / "msg"
    gate = threading.Event()
    synced: list[str] = []
    real = spoolmod.fsync_dir

    def slow_fsync_dir(path):
        if Path(path) == msg_dir:
            gate.wait(10)
            synced.append(sorted(p.name for p in msg_dir.iterdir())[-1])
        real(path)

    monkeypatch.setattr(spoolmod, "fsync_dir", slow_fsync_dir)
    send = asyncio.create_task(harness.send("alice@example.com", ["bob@example.com"]))
    await asyncio.sleep(0.3)
    assert not send.done(), "acknowledged before the directory fsync"
    assert spooled(harness), "the file is renamed into msg/ before the directory fsync"
    gate.set()
    replies = await send
    assert replies["bob@example.com"].startswith("250 ")
    assert synced and synced[0] == replies["bob@example.com"].rsplit(" ", 1)[1]


async def test_messages_arriving_together_are_each_fsynced_before_their_250(harness, monkeypatch):
    """Group commit: many sessions at once share directory fsyncs, and no one
    hears 250 before the file of its own message was fsynced."""
    await harness.start()
    fsynced: set[str] = set()
    real_fsync = os.fsync

    def recording_fsync(fd):
        real_fsync(fd)
        name = os.readlink(f"/proc/self/fd/{fd}")
        fsynced.add(Path(name).name)

    monkeypatch.setattr(spoolmod.os, "fsync", recording_fsync)

    async def one(i: int) -> str:
        replies = await harness.send(f"s{i}@remote.test", ["bob@example.com"])
        reply = replies["bob@example.com"]
        assert reply.startswith("250 "), reply
        qid = reply.rsplit(" ", 1)[1]
        assert qid in fsynced, "250 before the message file was fsynced"
        return qid

    ids = await asyncio.gather(*(one(i) for i in range(20)))
    assert len(set(ids)) == 20


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
    real_write = os.write

    def full(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(harness.root / "spool" / "tmp")):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(spoolmod.os, "write", full)
    replies = await harness.send("alice@example.com", ["bob@example.com", "erin@other.org"])
    assert all(r.startswith("452 4.3.1") for r in replies.values()), replies
    assert not spooled(harness)
    assert not list((harness.root / "spool" / "tmp").iterdir())
    monkeypatch.setattr(spoolmod.os, "write", real_write)
    replies = await harness.send("alice@example.com", ["bob@example.com"])
    assert replies["bob@example.com"].startswith("250")


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
