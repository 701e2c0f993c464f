"""Deliveries that arrive together are stored together: one group commit
(each file fsynced, the folder fsynced once, one index transaction) instead
of one each; every message still gets its own UID and its own reply, and
the quota is counted message by message within a group."""
from __future__ import annotations

import asyncio
import errno
import os

from correo_server.mailstore.store.disk import FolderDisk
from correo_server.wire.client import Connection
from correo_server.wire.data import wire_data

from .delivery_support import ALICE, DAVE, DAVE_QUOTA


async def deliver_concurrently(port: int, rcpt: str, messages: list[bytes]) -> list[int]:
    async def one(message: bytes) -> int:
        conn = await Connection.open("mailstore", "127.0.0.1", port, connect_timeout=10, timeout=30)
        try:
            assert (await conn.hello("queue.test", lmtp=True)).ok
            outcome = await conn.transaction("bob@example.org", [rcpt], wire_data(message), size=len(message))
            return outcome.replies[0].code
        finally:
            await conn.quit()
    return await asyncio.gather(*(one(m) for m in messages))


def test_concurrent_deliveries_share_commits(mailstore, monkeypatch):
    commits: list[int] = []
    real = FolderDisk.commit_new

    def counting(self, staged, **kwargs):
        commits.append(len(staged))
        return real(self, staged, **kwargs)

    monkeypatch.setattr(FolderDisk, "commit_new", counting)
    port = mailstore.ports["lmtp"]
    messages = [b"Subject: %d\r\n\r\nbody %d\r\n" % (i, i) for i in range(30)]
    codes = asyncio.run(deliver_concurrently(port, ALICE, messages))
    assert codes == [250] * 30
    _validity, stored = mailstore.inbox(ALICE)
    assert len({m.uid for m in stored}) == 30
    bodies = sorted(mailstore.read(ALICE, m.uid).split(b"\r\n\r\n", 1)[1] for m in stored)
    assert bodies == sorted(b"body %d\r\n" % i for i in range(30))
    assert sum(commits) == 30 and len(commits) < 30, commits  # some messages were committed together


def test_the_quota_is_counted_within_a_group(mailstore):
    port = mailstore.ports["lmtp"]
    size = DAVE_QUOTA // 3
    messages = [b"Subject: q\r\n\r\n" + b"x" * size + b"\r\n" for _ in range(4)]
    codes = asyncio.run(deliver_concurrently(port, DAVE, messages))
    _validity, stored = mailstore.inbox(DAVE)
    assert sorted(codes) == [250, 250, 552, 552] and len(stored) == 2
    assert sum(m.size for m in stored) <= DAVE_QUOTA


def tmp_files(mailstore, address: str) -> list[str]:
    async def go():
        folder = await (await mailstore.store.mailbox(address)).folder("INBOX")
        return sorted(p.name for p in (folder.path / "tmp").iterdir())
    return mailstore.run(go())


def test_a_group_is_made_durable_by_one_sync_after_all_its_files_are_written(mailstore, monkeypatch):
    """syncfs once for the group (one journal commit and disk flush), not an
    fsync per file; every file of the group was written before it, and no
    one hears 250 before it returned."""
    from correo_server.mailstore.store import folder as foldermod

    syncs: list[int] = []
    real = foldermod.sync_filesystem

    def recording(fd):
        syncs.append(len(os.listdir(os.readlink(f"/proc/self/fd/{fd}"))))  # the files in tmp/ now
        real(fd)

    monkeypatch.setattr(foldermod, "sync_filesystem", recording)
    port = mailstore.ports["lmtp"]
    messages = [b"Subject: %d\r\n\r\nbody %d\r\n" % (i, i) for i in range(30)]
    codes = asyncio.run(deliver_concurrently(port, ALICE, messages))
    assert codes == [250] * 30
    _validity, stored = mailstore.inbox(ALICE)
    assert len(stored) == 30
    assert syncs and all(n >= 2 for n in syncs), syncs  # a whole group's files were in tmp/ at each sync
    assert len(syncs) < 30
    assert not tmp_files(mailstore, ALICE)


def test_a_failed_group_sync_stores_none_of_that_group_and_answers_4xx(mailstore, monkeypatch):
    from correo_server.mailstore.store import folder as foldermod

    def failing(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(foldermod, "sync_filesystem", failing)
    port = mailstore.ports["lmtp"]
    messages = [b"Subject: %d\r\n\r\nbody %d\r\n" % (i, i) for i in range(20)]
    codes = asyncio.run(deliver_concurrently(port, ALICE, messages))
    _validity, stored = mailstore.inbox(ALICE)
    assert all(c == 250 or 400 <= c < 500 for c in codes), codes
    assert any(400 <= c < 500 for c in codes), codes  # some arrived together, and their sync failed
    assert len(stored) == codes.count(250)  # what was refused is not there either
    assert not tmp_files(mailstore, ALICE)
    monkeypatch.undo()
    assert asyncio.run(deliver_concurrently(port, ALICE, messages[:5])) == [250] * 5
