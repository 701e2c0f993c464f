"""The mailstore's storage: Maildir files, the index, repair, quota, and change
notification — what LMTP, POP3 and IMAP rely on."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from correo_server.mailstore import maildir
from correo_server.mailstore.index import INDEX_FILE, Index
from correo_server.mailstore.store import (DiskFull, FolderExists, FolderError, MessageGone, NoSuchFolder,
                                           QuotaExceeded, Store, Usage)
from imaptest_support import ALICE, BOB

MSG = b"From: a@example.org\r\nSubject: hello\r\n\r\nHello, world.\r\n"
BINARY = (b"From: a@example.org\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\nMIME-Version: 1.0\r\n"
          b"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
          b"Caf\xe9 cr\xe8me \x00\x01\xff\r\nbare\nlf and bare\rcr\r\n")


def files_of(folder_path: Path) -> list[str]:
    return sorted(os.listdir(folder_path / "new") + os.listdir(folder_path / "cur"))


# -- delivery and reading -------------------------------------------------------

async def test_delivered_message_reads_back_byte_identical(store: Store):
    uid1 = await store.deliver(ALICE, BINARY)
    uid2 = await store.deliver(ALICE, MSG)
    assert (uid1, uid2) == (1, 2)
    inbox = await (await store.mailbox(ALICE)).folder("INBOX")
    assert await inbox.read(uid1) == BINARY
    assert [m.size for m in inbox.messages()] == [len(BINARY), len(MSG)]
    assert await store.usage(ALICE) == Usage(2, len(BINARY) + len(MSG))
    assert store.last_delivery(ALICE) == pytest.approx(time.time(), abs=5)


async def test_new_mailbox_is_a_maildir_with_default_folders(store: Store, config):
    await store.deliver(ALICE, MSG)
    root = Path(config.mailstore.data_dir) / ALICE
    for sub in ("cur", "new", "tmp"):
        assert (root / sub).is_dir()
    for name in (".Sent", ".Drafts", ".Trash", ".Junk"):
        assert (root / name / "cur").is_dir() and (root / name / "maildirfolder").exists()
    [name] = os.listdir(root / "new")
    # Dovecot's naming: unique part, S= size, W= size with CRLF line ends
    assert f",S={len(MSG)},W={len(MSG)}" in name
    mbox = await store.mailbox(ALICE)
    assert mbox.subscriptions() == ["Drafts", "INBOX", "Junk", "Sent", "Trash"]


async def test_flags_are_written_into_file_names_and_keywords_file(store: Store, config):
    uid = await store.deliver(ALICE, MSG)
    inbox = await (await store.mailbox(ALICE)).folder("INBOX")
    changed, _ = await inbox.store([uid], ["\\Seen", "\\Flagged", "$Forwarded"], "add")
    assert changed[0].flags == {"\\Seen", "\\Flagged", "$Forwarded"}
    root = Path(config.mailstore.data_dir) / ALICE
    [name] = os.listdir(root / "cur")
    assert name.endswith(":2,FSa")
    assert (root / "dovecot-keywords").read_text() == "0 $Forwarded\n"
    await inbox.store([uid], ["\\Flagged"], "remove")
    assert os.listdir(root / "cur")[0].endswith(":2,Sa")


async def test_modseq_grows_with_every_change(store: Store):
    uid = await store.deliver(ALICE, MSG)
    inbox = await (await store.mailbox(ALICE)).folder("INBOX")
    first = inbox.get(uid).modseq
    await inbox.store([uid], ["\\Seen"], "add")
    assert inbox.get(uid).modseq > first == first
    assert inbox.highestmodseq == inbox.get(uid).modseq
    unchanged, _ = await inbox.store([uid], ["\\Seen"], "add")  # no change: no new modseq
    assert unchanged == [] and inbox.highestmodseq == inbox.get(uid).modseq
    _, refused = await inbox.store([uid], ["\\Deleted"], "add", unchanged_since=first)
    assert refused == [uid] and "\\Deleted" not in inbox.get(uid).flags


# -- quota and disk space ------------------------------------------------------------

async def test_quota_counts_every_folder(store: Store, directory):
    mbox = await store.mailbox(ALICE)
    sent = await mbox.folder("Sent")
    await sent.append(b"x" * 600, quota_bytes=1000)
    with pytest.raises(QuotaExceeded) as err:
        await store.deliver(ALICE, b"y" * 500, quota_bytes=1000)
    assert err.value.quota == 1000 and err.value.usage == 600
    assert await store.usage(ALICE) == Usage(1, 600)
    # the directory's quota applies when none is given
    big = b"z" * (11 * 1024 * 1024)
    with pytest.raises(QuotaExceeded):
        await store.deliver(ALICE, big)


async def test_disk_full_is_refused_before_writing(tmp_path, directory):
    store = Store(tmp_path / "mail", directory, min_free_bytes=1 << 62)
    with pytest.raises(DiskFull):
        await store.deliver(ALICE, MSG)
    assert await store.usage(ALICE) == Usage(0, 0)
    await store.close()


# -- folders ------------------------------------------------------------------------------

async def test_folder_hierarchy_create_rename_delete(store: Store, config):
    mbox = await store.mailbox(ALICE)
    await mbox.create("Work/2024/Q1")
    names = {e.name: e.selectable for e in await mbox.list_folders()}
    assert names["Work"] and names["Work/2024"] and names["Work/2024/Q1"]
    root = Path(config.mailstore.data_dir) / ALICE
    assert (root / ".Work.2024.Q1" / "cur").is_dir()
    with pytest.raises(FolderExists):
        await mbox.create("Work")
    q1 = await mbox.folder("Work/2024/Q1")
    await q1.append(MSG)
    await mbox.subscribe("Work/2024/Q1")
    await mbox.rename("Work", "Jobs")
    names = {e.name for e in await mbox.list_folders()}
    assert "Jobs/2024/Q1" in names and "Work" not in names
    assert mbox.subscriptions().count("Jobs/2024/Q1") == 1
    assert len(await mbox.folder("Jobs/2024/Q1")) == 1
    await mbox.delete("Jobs")  # children stay; the parent is implied only
    entries = {e.name: e.selectable for e in await mbox.list_folders()}
    assert entries["Jobs"] is False and entries["Jobs/2024"] is True
    with pytest.raises(FolderError):
        await mbox.delete("INBOX")
    with pytest.raises(NoSuchFolder):
        await mbox.folder("Nope")


async def test_names_with_dots_and_non_ascii_round_trip(store: Store):
    mbox = await store.mailbox(ALICE)
    await mbox.create("v1.2")
    await mbox.create("&AOk-t&AOk-")  # "été" in modified UTF-7
    names = {e.name for e in await mbox.list_folders()}
    assert {"v1.2", "&AOk-t&AOk-"} <= names
    assert maildir.dir_for("v1.2") == ".v1\\2e2"


async def test_recreated_folder_gets_a_new_uidvalidity(store: Store):
    mbox = await store.mailbox(ALICE)
    first = (await mbox.create("Box")).uidvalidity
    await mbox.delete("Box")
    second = (await mbox.create("Box")).uidvalidity
    assert second > first


async def test_rename_inbox_moves_its_messages(store: Store):
    await store.deliver(ALICE, MSG)
    await store.deliver(ALICE, BINARY)
    mbox = await store.mailbox(ALICE)
    await mbox.rename("INBOX", "Old")
    assert len(await mbox.folder("INBOX")) == 0
    old = await mbox.folder("Old")
    assert [await old.read(u) for u in old.uids()] == [MSG, BINARY]


async def test_copy_and_move_keep_flags_and_dates(store: Store):
    uid = await store.deliver(ALICE, MSG)
    mbox = await store.mailbox(ALICE)
    inbox, trash, sent = [await mbox.folder(n) for n in ("INBOX", "Trash", "Sent")]
    await inbox.store([uid], ["\\Seen", "Work"], "add")
    [(src, dst)] = await inbox.copy([uid], sent)
    assert sent.get(dst).flags == {"\\Seen", "Work"}
    assert sent.get(dst).internaldate == inbox.get(src).internaldate
    [(src, moved)] = await inbox.move([uid], trash)
    assert len(inbox) == 0 and await trash.read(moved) == MSG
    assert (await store.usage(ALICE)).messages == 2


# -- durability and repair --------------------------------------------------------------

async def test_uids_survive_a_restart(tmp_path, directory):
    s1 = Store(tmp_path / "mail", directory)
    uids = [await s1.deliver(ALICE, MSG + bytes([65 + i])) for i in range(5)]
    inbox = await (await s1.mailbox(ALICE)).folder("INBOX")
    validity = inbox.uidvalidity
    await inbox.expunge([uids[1]])
    await s1.close()
    s2 = Store(tmp_path / "mail", directory)
    inbox2 = await (await s2.mailbox(ALICE)).folder("INBOX")
    assert inbox2.uidvalidity == validity
    assert inbox2.uids() == [1, 3, 4, 5]
    assert await s2.deliver(ALICE, MSG) == 6
    await s2.close()


async def test_repair_adopts_stray_files_and_drops_missing_ones(tmp_path, directory):
    s1 = Store(tmp_path / "mail", directory)
    for i in range(3):
        await s1.deliver(ALICE, MSG)
    inbox = await (await s1.mailbox(ALICE)).folder("INBOX")
    root = inbox.path
    gone = root / inbox.get(2).path
    await s1.close()
    gone.unlink()  # a row without a file: expunged on open
    (root / "cur" / "1700000000.M1P1Q1.other,S=4:2,S").write_bytes(b"abcd")  # a file without a row
    (root / "tmp" / "half-written").write_bytes(b"partial")
    s2 = Store(tmp_path / "mail", directory)
    inbox2 = await (await s2.mailbox(ALICE)).folder("INBOX")
    assert inbox2.uids() == [1, 3, 4]
    assert inbox2.get(4).flags == {"\\Seen"} and await inbox2.read(4) == b"abcd"
    assert inbox2.get(4).internaldate == pytest.approx(os.stat(root / inbox2.get(4).path).st_mtime)
    assert os.listdir(root / "tmp") == []
    assert await s2.usage(ALICE) == Usage(3, 2 * len(MSG) + 4)
    await s2.close()


async def test_corrupt_index_is_rebuilt_from_files(tmp_path, directory):
    s1 = Store(tmp_path / "mail", directory)
    await s1.deliver(ALICE, MSG)
    await s1.deliver(ALICE, BINARY)
    inbox = await (await s1.mailbox(ALICE)).folder("INBOX")
    old_validity = inbox.uidvalidity
    await s1.close()
    for suffix in ("-wal", "-shm"):
        Path(str(inbox.path / INDEX_FILE) + suffix).unlink(missing_ok=True)
    (inbox.path / INDEX_FILE).write_bytes(b"this is not a database" * 100)
    s2 = Store(tmp_path / "mail", directory)
    inbox2 = await (await s2.mailbox(ALICE)).folder("INBOX")
    assert sorted([await inbox2.read(u) for u in inbox2.uids()]) == sorted([MSG, BINARY])
    assert inbox2.uidvalidity != old_validity  # clients must resynchronise
    await s2.close()


async def test_read_of_an_expunged_message_says_gone(store: Store):
    uid = await store.deliver(ALICE, MSG)
    inbox = await (await store.mailbox(ALICE)).folder("INBOX")
    await inbox.expunge([uid])
    with pytest.raises(MessageGone):
        await inbox.read(uid)


async def test_concurrent_deliveries_get_distinct_uids(store: Store):
    uids = await asyncio.gather(*(store.deliver(ALICE, MSG + str(i).encode()) for i in range(40)))
    assert sorted(uids) == list(range(1, 41))
    inbox = await (await store.mailbox(ALICE)).folder("INBOX")
    assert len(files_of(inbox.path)) == 40
    bodies = {await inbox.read(u) for u in uids}
    assert len(bodies) == 40


CRASH_WRITER = textwrap.dedent("""
    import asyncio, sys
    from correo_server.mailstore.store import Store
    async def main():
        store = Store(sys.argv[1])
        i = 0
        while True:
            i += 1
            data = b"Subject: %d\\r\\n\\r\\n" % i + b"x" * (i * 37 % 5000)
            uid = await store.deliver("alice@example.com", data, quota_bytes=0)
            print(uid, i, flush=True)  # acknowledged
            if i % 7 == 0:
                inbox = await (await store.mailbox("alice@example.com")).folder("INBOX")
                await inbox.store([uid], ["\\\\Seen"], "add")
            if i % 11 == 0:
                inbox = await (await store.mailbox("alice@example.com")).folder("INBOX")
                print("expunging", uid - 3, flush=True)  # may be gone from here on
                await inbox.expunge([uid - 3])
    asyncio.run(main())
""")


@pytest.mark.parametrize("delay", [0.3, 0.7])
async def test_killed_writer_leaves_consistent_index_and_no_lost_message(tmp_path, delay):
    data_dir = tmp_path / "mail"
    proc = subprocess.Popen([sys.executable, "-c", CRASH_WRITER, str(data_dir)], stdout=subprocess.PIPE)
    acked: dict[int, int] = {}  # uid -> i, as printed once deliver() returned
    expunged: set[int] = set()
    buf = b""

    def take_lines() -> None:
        nonlocal buf
        whole, _, buf = buf.rpartition(b"\n")  # a partial last line waits
        for line in whole.decode().splitlines():
            parts = line.split()
            if parts and parts[0] == "expunging":
                expunged.add(int(parts[1]))
            elif len(parts) == 2:
                acked[int(parts[0])] = int(parts[1])

    os.set_blocking(proc.stdout.fileno(), False)
    deadline, give_up = time.monotonic() + delay, time.monotonic() + 30
    while (time.monotonic() < deadline or len(acked) < 5) and time.monotonic() < give_up:
        buf += proc.stdout.read() or b""
        take_lines()
        await asyncio.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    buf += proc.stdout.read() or b""
    take_lines()
    assert acked, "the writer acknowledged nothing"

    store = Store(data_dir)
    inbox = await (await store.mailbox(ALICE)).folder("INBOX")
    index_rows = Index(inbox.path / INDEX_FILE).rows()
    on_disk = maildir.scan(inbox.path)
    assert {r.base for r in index_rows} == set(on_disk)  # index and files agree
    assert os.listdir(inbox.path / "tmp") == []
    for uid, i in acked.items():
        if uid in expunged:
            continue
        data = await inbox.read(uid)  # every acknowledged message is there, same UID
        assert data.startswith(b"Subject: %d\r\n" % i)
    assert len(set(inbox.uids())) == len(inbox.uids())
    await store.close()


# -- change notification ----------------------------------------------------------------------

async def test_watchers_hear_changes_made_by_others(store: Store):
    mbox = await store.mailbox(ALICE)
    inbox = await mbox.folder("INBOX")
    me, other = object(), object()
    mine = inbox.watch(me)
    theirs = inbox.watch(other)
    uid = await store.deliver(ALICE, MSG)  # LMTP: everybody hears it
    assert mine.take().appended and theirs.take().appended
    await inbox.store([uid], ["\\Seen"], "add", origin=me)
    assert not mine.take()  # one's own change is reported by oneself
    assert theirs.take().flags == {uid}
    waiter = asyncio.ensure_future(theirs.wait(5))
    await asyncio.sleep(0)
    await inbox.expunge([uid], origin=me)
    assert await waiter
    assert theirs.take().expunged == {uid}
    mine.close()
    theirs.close()
    assert len(inbox.hub) == 0


async def test_mailboxes_are_separate(store: Store):
    await store.deliver(ALICE, MSG)
    assert await store.usage(BOB) == Usage(0, 0)
    assert await store.usage("nobody@example.com") == Usage(0, 0)


async def test_pop3_lock_is_exclusive(store: Store):
    mbox = await store.mailbox(ALICE)
    a, b = object(), object()
    assert mbox.try_lock("pop3", a)
    assert not mbox.try_lock("pop3", b)
    mbox.unlock("pop3", a)
    assert mbox.try_lock("pop3", b)


# -- taking over a Maildir that Dovecot kept -------------------------------------------------

async def test_a_dovecot_maildir_keeps_its_uids_keywords_subscriptions_and_gets_crlf(tmp_path, directory):
    root = tmp_path / "mail" / ALICE
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
        (root / ".Work.Projects" / sub).mkdir(parents=True)
    (root / "cur" / "1700000001.M1P1.old,S=19,W=22:2,Sa").write_bytes(b"Subject: a\n\nbody\n\n")
    (root / "cur" / "1700000002.M2P1.old,S=10,W=12:2,").write_bytes(b"Subject: b\n")
    (root / "new" / "1700000003.M3P1.old").write_bytes(b"Subject: c\r\n\r\nkept as is\r\n")
    (root / "dovecot-uidlist").write_text("3 V1234567 N9 Gabc\n"
                                          "7 :1700000001.M1P1.old,S=19,W=22\n"
                                          "8 W12 :1700000002.M2P1.old,S=10,W=12\n")
    (root / "dovecot-keywords").write_text("0 $Label1\n")
    (root / "subscriptions").write_text("V\t2\n\nINBOX\nWork\tProjects\n")
    store = Store(tmp_path / "mail", directory)
    mbox = await store.mailbox(ALICE)
    inbox = await mbox.folder("INBOX")
    assert inbox.uidvalidity == 1234567
    assert inbox.uids() == [7, 8, 9] and inbox.uidnext == 10
    assert inbox.get(7).flags == {"\\Seen", "$Label1"}
    assert await inbox.read(7) == b"Subject: a\r\n\r\nbody\r\n\r\n" and inbox.get(7).size == 22
    assert await inbox.read(9) == b"Subject: c\r\n\r\nkept as is\r\n"  # already CRLF: untouched
    assert mbox.subscriptions() == ["INBOX", "Work/Projects"]
    assert {e.name for e in await mbox.list_folders()} >= {"INBOX", "Work", "Work/Projects"}
    # a flag change keeps the Dovecot letters, a copy keeps the line-end conversion
    await inbox.store([8], ["$Label1"], "add")
    assert inbox.get(8).path.endswith(":2,a")
    work = await mbox.folder("Work/Projects")
    [(_, new_uid)] = await inbox.copy([7], work)
    assert await work.read(new_uid) == await inbox.read(7)
    await store.close()
    store = Store(tmp_path / "mail", directory)  # and it stays so once the index exists
    inbox = await (await store.mailbox(ALICE)).folder("INBOX")
    assert inbox.uids() == [7, 8, 9] and inbox.uidvalidity == 1234567
    assert await inbox.read(8) == b"Subject: b\r\n"
    await store.close()


async def test_a_cancelled_write_still_completes_and_the_view_agrees(store):
    inbox = await (await store.mailbox(ALICE)).folder("INBOX")
    for _ in range(5):
        task = asyncio.ensure_future(inbox.append(MSG))
        await asyncio.sleep(0.001)  # the write is under way in a thread
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    rows = Index(inbox.path / INDEX_FILE).rows()
    assert inbox.uids() == [r.uid for r in rows]  # what the index holds, the view shows
    assert set(maildir.scan(inbox.path)) == {r.base for r in rows}
    assert not inbox.mailbox.lock.locked()
    assert await store.deliver(ALICE, MSG) == max(inbox.uids())


async def test_the_view_changes_only_on_the_event_loop(tmp_path, directory, monkeypatch):
    """Sessions read a folder's view without locks, so nothing may change it
    from a worker thread: deliveries, flags, copies, moves, expunges, a file
    renamed behind the store's back, folder renames and deletes, repairs,
    evictions — every change to a Folder, a Mailbox or its usage happens on
    the loop's thread."""
    import threading

    from correo_server.mailstore.store import Folder, Mailbox, quota

    offenders: list[str] = []
    loop_thread = threading.current_thread()

    def guard(cls, name):
        original = getattr(cls, name)

        def checked(self, *args, **kwargs):
            if threading.current_thread() is not loop_thread:
                offenders.append(f"{cls.__name__}.{name}({args[:1]!r})")
            return original(self, *args, **kwargs)
        monkeypatch.setattr(cls, name, checked)

    for cls in (Folder, Mailbox):
        guard(cls, "__setattr__")
    for name in ("_load", "_set", "_drop", "_moved", "take_recent"):
        guard(Folder, name)
    for name in ("set", "delta", "rename", "drop"):
        guard(quota.UsageBook, name)

    store = Store(tmp_path / "mail", directory, max_open_folders=2, idle_close_seconds=0)
    mbox = await store.mailbox(ALICE)
    for _ in range(4):
        await store.deliver(ALICE, BINARY)
    inbox = await mbox.folder("INBOX")
    await inbox.store([1, 2], ["\\Seen", "$Work"], "add")
    moved = inbox.get(1)
    os.rename(inbox.path / moved.path, inbox.path / "cur" / (moved.base + ":2,FS"))  # another program
    assert await inbox.read(1) == BINARY and inbox.get(1).path.endswith(":2,FS")
    work = await mbox.create("Work/2024")
    await inbox.copy([1, 2], work)
    await inbox.move([3], work)
    await inbox.expunge([4])
    await mbox.subscribe("Work/2024")
    await mbox.rename("Work", "Archive")
    await mbox.delete("Archive/2024")
    (inbox.path / "cur" / "1700000000.M1P1Q1.other,S=4:2,S").write_bytes(b"abcd")
    await store.close()
    again = Store(tmp_path / "mail", directory)
    assert len(await (await again.mailbox(ALICE)).folder("INBOX")) == 3  # repaired: a file without a row
    await again.close()
    assert offenders == []


def test_room_decision_quota_first_then_the_free_space_floor():
    from correo_server.mailstore.store.quota import check_room
    check_room(used=90, size=10, quota=100, free=1000, min_free=0)  # exactly full is fine
    check_room(used=90, size=50, quota=0, free=None, min_free=10**9)  # no quota, free space unknown
    with pytest.raises(QuotaExceeded) as exc:
        check_room(used=90, size=11, quota=100, free=1000, min_free=0)
    assert (exc.value.usage, exc.value.quota, exc.value.size) == (90, 100, 11)
    with pytest.raises(DiskFull):
        check_room(used=0, size=10, quota=None, free=100, min_free=95)


async def test_derived_data_is_kept_in_the_index_and_follows_copies_and_moves(store: Store):
    """What a protocol derived from a message (IMAP: ENVELOPE and
    BODYSTRUCTURE, SORT's summary) is kept per UID and kind; a copy or a
    move carries it along, an expunge drops it, and a value for a message
    expunged meanwhile is not kept."""
    for _ in range(3):
        await store.deliver(ALICE, MSG)
    mbox = await store.mailbox(ALICE)
    inbox, trash = await mbox.folder("INBOX"), await mbox.folder("Trash")
    await inbox.put_message_data("k", {1: b"one", 2: b"two", 3: b"three", 99: b"gone"})
    await inbox.put_message_data("other", {1: b"uno"})
    assert await inbox.message_data_for("k", [1, 2, 3, 99]) == {1: b"one", 2: b"two", 3: b"three"}
    pairs = await inbox.copy([1], trash) + await inbox.move([2], trash)
    assert await trash.message_data_for("k", [new for _, new in pairs]) == {pairs[0][1]: b"one",
                                                                            pairs[1][1]: b"two"}
    assert await trash.message_data_for("other", [pairs[0][1]]) == {pairs[0][1]: b"uno"}
    await inbox.expunge([3])
    assert await inbox.message_data_for("k", [1, 2, 3]) == {1: b"one"}
    again = Store(store.data_dir, store.directory)
    assert await (await (await again.mailbox(ALICE)).folder("INBOX")).message_data_for("k", [1]) == {1: b"one"}
    await again.close()
