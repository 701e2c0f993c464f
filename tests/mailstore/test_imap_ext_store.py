"""What the store keeps for the IMAP extensions: the UIDs and MODSEQs of
expunges (QRESYNC), values derived from messages that go with them (the
summaries of SORT and THREAD), folder-wide values (MAILBOXID) and reading
many messages off the event loop."""
from __future__ import annotations

import sqlite3

from correo_server.mailstore.index import INDEX_FILE
from correo_server.mailstore.store import Store
from imaptest_support import ALICE

MSG = b"From: a@example.org\r\nSubject: hello\r\n\r\nHello, world.\r\n"


async def test_expunges_are_remembered_with_their_modseq(store: Store):
    for i in range(5):
        await store.deliver(ALICE, MSG + bytes([65 + i]))
    mbox = await store.mailbox(ALICE)
    inbox = await mbox.folder("INBOX")
    trash = await mbox.folder("Trash")
    before = inbox.highestmodseq
    await inbox.expunge([2])
    middle = inbox.highestmodseq
    await inbox.move([4], trash)
    assert await inbox.vanished_since(before) == ([2, 4], True)
    assert await inbox.vanished_since(middle) == ([4], True)
    assert await inbox.vanished_since(inbox.highestmodseq) == ([], True)


async def test_expunges_by_repair_are_remembered_too(tmp_path, directory):
    s1 = Store(tmp_path / "mail", directory)
    for i in range(3):
        await s1.deliver(ALICE, MSG)
    inbox = await (await s1.mailbox(ALICE)).folder("INBOX")
    modseq = inbox.highestmodseq
    gone = inbox.path / inbox.get(2).path
    await s1.close()
    gone.unlink()
    s2 = Store(tmp_path / "mail", directory)
    inbox2 = await (await s2.mailbox(ALICE)).folder("INBOX")
    assert await inbox2.vanished_since(modseq) == ([2], True)
    await s2.close()


async def test_an_index_made_before_the_record_says_it_is_incomplete(tmp_path, directory):
    s1 = Store(tmp_path / "mail", directory)
    for i in range(3):
        await s1.deliver(ALICE, MSG)
    inbox = await (await s1.mailbox(ALICE)).folder("INBOX")
    path = inbox.path / INDEX_FILE
    await s1.close()
    db = sqlite3.connect(path)  # as an index of an earlier version had it
    db.execute("DELETE FROM meta WHERE key = 'vanished_from'")
    db.execute("UPDATE meta SET value = 7 WHERE key = 'highestmodseq'")
    db.commit()
    db.close()
    s2 = Store(tmp_path / "mail", directory)
    inbox2 = await (await s2.mailbox(ALICE)).folder("INBOX")
    assert await inbox2.vanished_since(3) == ([], False)
    await inbox2.expunge([1])
    assert await inbox2.vanished_since(7) == ([1], True)
    await s2.close()


async def test_derived_values_go_with_their_message_and_survive_a_restart(tmp_path, directory):
    s1 = Store(tmp_path / "mail", directory)
    for i in range(3):
        await s1.deliver(ALICE, MSG)
    inbox = await (await s1.mailbox(ALICE)).folder("INBOX")
    await inbox.put_message_data("test.kind", {1: b"one", 2: b"two", 3: b"three", 99: b"never stored"})
    await inbox.put_message_data("other", {1: b"x"})
    await inbox.expunge([2])
    assert await inbox.message_data("test.kind") == {1: b"one", 3: b"three"}
    await s1.close()
    s2 = Store(tmp_path / "mail", directory)
    inbox2 = await (await s2.mailbox(ALICE)).folder("INBOX")
    assert await inbox2.message_data("test.kind") == {1: b"one", 3: b"three"}
    assert await inbox2.message_data("other") == {1: b"x"}
    await s2.close()


async def test_folder_values_are_made_once_and_follow_a_rename(store: Store):
    mbox = await store.mailbox(ALICE)
    await mbox.create("Projects")
    folder = await mbox.folder("Projects")
    made = []

    def make() -> str:
        made.append(1)
        return f"F{len(made)}"

    assert await folder.ext_meta("id", make) == "F1"
    assert await folder.ext_meta("id", make) == "F1"
    await mbox.rename("Projects", "Archive/Projects")
    assert await (await mbox.folder("Archive/Projects")).ext_meta("id") == "F1"
    await mbox.delete("Archive/Projects")
    await mbox.create("Archive/Projects")
    assert await (await mbox.folder("Archive/Projects")).ext_meta("id") is None
    await folder_set(mbox)


async def folder_set(mbox) -> None:
    f = await mbox.folder("Archive/Projects")
    await f.set_ext_meta("use", "\\Archive")
    assert await f.ext_meta("use") == "\\Archive"
    await f.set_ext_meta("use", None)
    assert await f.ext_meta("use") is None


async def test_map_messages_reads_each_message_once_off_the_loop(store: Store):
    for i in range(4):
        await store.deliver(ALICE, MSG + bytes([65 + i]))
    inbox = await (await store.mailbox(ALICE)).folder("INBOX")
    await inbox.expunge([3])
    assert await inbox.map_messages([1, 2, 3, 4], lambda data: data[-1:]) == {1: b"A", 2: b"B", 4: b"D"}


async def test_a_special_use_given_at_create_is_listed_and_kept(tmp_path, directory):
    s1 = Store(tmp_path / "mail", directory)
    mbox = await s1.mailbox(ALICE)
    await (await mbox.create("Old mail")).set_ext_meta("special_use", "\\Archive")
    await mbox.rename("Old mail", "Archive")
    await s1.close()
    s2 = Store(tmp_path / "mail", directory)
    entries = {e.name: e.special_use for e in await (await s2.mailbox(ALICE)).list_folders()}
    assert entries["Archive"] == "\\Archive" and entries["Sent"] == "\\Sent" and entries["INBOX"] is None
    await s2.close()
