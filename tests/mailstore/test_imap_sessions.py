"""Several sessions on one mailbox: each sees the others' flag changes,
expunges and new mail (and an LMTP delivery wakes IDLE); numbers only change
when the protocol allows; UIDs survive a restart."""
from __future__ import annotations

import re
import threading
import time

import imapclient

from imaptest_messages import SIMPLE
from imaptest_support import ALICE, PASSWORD, RawClient, ServerThread


def test_two_sessions_see_each_others_flag_changes_and_expunges(imap):
    for _ in range(3):
        imap.deliver(ALICE, SIMPLE)
    a, b = RawClient(imap.port), RawClient(imap.port)
    a.login()
    b.login()
    a.cmd("SELECT INBOX")
    b.cmd("SELECT INBOX")
    a.cmd("STORE 2 +FLAGS (\\Flagged)")
    lines = b.cmd("NOOP")
    assert lines[0] == b"* 2 FETCH (UID 2 FLAGS (\\Flagged))\r\n"
    a.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)")
    a.cmd("EXPUNGE")
    lines = b.cmd("NOOP")
    assert lines[:-1] == [b"* 1 EXPUNGE\r\n"]
    b.cmd("STORE 1 +FLAGS (\\Seen)")  # b's message 1 is now UID 2
    # a selected first, so a sees the messages as \Recent (RFC 3501: one session does)
    assert a.cmd("NOOP")[0] == b"* 1 FETCH (UID 2 FLAGS (\\Flagged \\Seen \\Recent))\r\n"
    lines = a.cmd(b"APPEND INBOX {%d+}\r\n" % len(SIMPLE) + SIMPLE)
    assert lines[:2] == [b"* 3 EXISTS\r\n", b"* 3 RECENT\r\n"]  # its own APPEND: a sees it first
    lines = b.cmd("NOOP")
    assert lines[:2] == [b"* 3 EXISTS\r\n", b"* 0 RECENT\r\n"]
    a.close()
    b.close()


def test_expunge_is_held_back_during_fetch_store_and_search(imap):
    for _ in range(3):
        imap.deliver(ALICE, SIMPLE)
    a, b = RawClient(imap.port), RawClient(imap.port)
    a.login()
    b.login()
    a.cmd("SELECT INBOX")
    b.cmd("SELECT INBOX")
    a.cmd("STORE 3 +FLAGS.SILENT (\\Deleted)")
    a.cmd("EXPUNGE")
    lines = b.cmd("FETCH 1:3 (UID)")  # no EXPUNGE now, and message 3 is gone
    assert not any(l.endswith(b" EXPUNGE\r\n") for l in lines)
    assert b"NO [EXPUNGEISSUED]" in lines[-1] and b"* 2 FETCH (UID 2)\r\n" in lines
    assert not any(l.endswith(b" EXPUNGE\r\n") for l in b.cmd("SEARCH ALL"))
    lines = b.cmd("UID FETCH 1 (FLAGS)")  # a UID command may report it
    assert b"* 3 EXPUNGE\r\n" in lines
    a.close()
    b.close()


def test_idle_is_woken_by_a_delivery_and_by_another_session(imap):
    imap.deliver(ALICE, SIMPLE)
    watcher, other = RawClient(imap.port), RawClient(imap.port)
    watcher.login()
    other.login()
    watcher.cmd("SELECT INBOX")
    other.cmd("SELECT INBOX")
    watcher.send(b"i1 IDLE\r\n")
    assert watcher.readline() == b"+ idling\r\n"
    started = time.monotonic()
    imap.deliver(ALICE, SIMPLE)  # what LMTP does
    assert watcher.readline() == b"* 2 EXISTS\r\n"
    assert watcher.readline() == b"* 2 RECENT\r\n"  # the watcher selected first: both are recent to it
    assert time.monotonic() - started < 2
    other.cmd("STORE 1 +FLAGS (\\Answered)")
    assert watcher.readline() == b"* 1 FETCH (UID 1 FLAGS (\\Answered \\Recent))\r\n"
    other.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert watcher.readline() == b"* 1 FETCH (UID 1 FLAGS (\\Answered \\Deleted \\Recent))\r\n"
    other.cmd("EXPUNGE")
    assert watcher.readline() == b"* 1 EXPUNGE\r\n"
    watcher.send(b"DONE\r\n")
    assert watcher.readline().startswith(b"i1 OK Idle completed")
    assert watcher.cmd("NOOP")[-1].split()[1] == b"OK"


def test_idle_with_imapclient(imap):
    client = imapclient.IMAPClient("127.0.0.1", port=imap.port, ssl=False)
    client.login(ALICE, PASSWORD)
    client.select_folder("INBOX")
    client.idle()
    timer = threading.Timer(0.2, lambda: imap.deliver(ALICE, SIMPLE))
    timer.start()
    responses = client.idle_check(timeout=10)
    client.idle_done()
    assert (1, b"EXISTS") in responses
    client.logout()


def test_deleting_the_folder_another_session_has_selected(imap):
    a, b = RawClient(imap.port), RawClient(imap.port)
    a.login()
    b.login()
    a.cmd("CREATE Temp")
    b.cmd("SELECT Temp")
    a.cmd("DELETE Temp")
    b.send(b"n NOOP\r\n")
    assert b.readline().startswith(b"* BYE Selected mailbox was deleted")


def test_uids_and_uidvalidity_are_stable_across_restarts(tmp_path, config, directory):
    server = ServerThread(config, directory)
    try:
        for _ in range(3):
            server.deliver(ALICE, SIMPLE)
        c = RawClient(server.port)
        c.login()
        before = c.cmd("SELECT INBOX")
        c.cmd("STORE 2 +FLAGS.SILENT (\\Deleted \\Seen)")
        c.cmd("CLOSE")
        fetched = c.cmd("STATUS INBOX (UIDVALIDITY UIDNEXT MESSAGES)")[0]
        c.close()
    finally:
        server.stop()
    server = ServerThread(config, directory)
    try:
        c = RawClient(server.port)
        c.login()
        assert c.cmd("STATUS INBOX (UIDVALIDITY UIDNEXT MESSAGES)")[0] == fetched
        c.cmd("SELECT INBOX")
        assert c.cmd("UID FETCH 1:* (FLAGS)")[:-1] == [b"* 1 FETCH (UID 1 FLAGS ())\r\n",
                                                        b"* 2 FETCH (UID 3 FLAGS ())\r\n"]
        uidvalidity = [l for l in before if b"UIDVALIDITY" in l][0]
        assert uidvalidity in c.cmd("SELECT INBOX")
        assert server.deliver(ALICE, SIMPLE) == 4
    finally:
        server.stop()


def test_server_shutdown_says_bye(config, directory):
    server = ServerThread(config, directory)
    c = RawClient(server.port)
    c.login()
    server.stop()
    assert c.readline() == b"* BYE Server shutting down.\r\n"
