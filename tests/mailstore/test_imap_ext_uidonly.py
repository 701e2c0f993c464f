"""UIDONLY (RFC 9586): once enabled, no message sequence numbers either
way — the RFC's examples against the running server."""
from __future__ import annotations

import re

from ext_messages import mail, ok
from imaptest_support import ALICE, RawClient


def uidonly(imap, raw, n: int = 4) -> None:
    for i in range(n):
        imap.deliver(ALICE, mail(f"m{i}"))
    assert b" UIDONLY" in ok(raw, "CAPABILITY")[0]
    assert ok(raw, "ENABLE UIDONLY") == [b"* ENABLED UIDONLY\r\n"]
    lines = ok(raw, "SELECT INBOX")
    assert b"* %d EXISTS\r\n" % n in lines
    assert not [ln for ln in lines if b"UNSEEN" in ln]


def test_message_numbers_are_refused(imap, raw):
    """RFC 9586 3: commands with message numbers, and numbers in a search
    program, are BAD [UIDREQUIRED]."""
    uidonly(imap, raw)
    refused = b"BAD [UIDREQUIRED] Message numbers are not allowed once UIDONLY is enabled\r\n"
    for command in ("FETCH 1 FLAGS", "SEARCH ALL", "STORE 1 +FLAGS (\\Seen)", "COPY 1 Trash", "MOVE 1 Trash",
                    "SORT (SUBJECT) UTF-8 ALL", "THREAD REFERENCES UTF-8 ALL", "UID SEARCH 1",
                    "UID SEARCH NOT 1:2"):
        assert raw.cmd(command)[-1] == b"t%d " % raw.n + refused, command
    ok(raw, "ENABLE QRESYNC")
    assert raw.cmd("SELECT INBOX (QRESYNC (1 5 1:4 (1,3 1,3)))")[-1] == b"t%d " % raw.n + refused
    assert ok(raw, "UID SEARCH ALL") == [b"* SEARCH 1 2 3 4\r\n"]


def test_uidfetch_responses(imap, raw):
    """RFC 9586 3.3: FETCH data as ``* uid UIDFETCH (...)``, for UID FETCH,
    UID STORE and other sessions' changes; expunges as VANISHED."""
    uidonly(imap, raw)
    assert ok(raw, "UID FETCH 2:3 (FLAGS)") == [b"* 2 UIDFETCH (FLAGS (\\Recent))\r\n",
                                                 b"* 3 UIDFETCH (FLAGS (\\Recent))\r\n"]
    assert ok(raw, "UID STORE 2 +FLAGS (\\Flagged)") == [b"* 2 UIDFETCH (FLAGS (\\Flagged \\Recent))\r\n"]
    other = RawClient(imap.port)
    other.login()
    ok(other, "SELECT INBOX")
    ok(other, "STORE 4 +FLAGS (\\Seen)")
    ok(other, "STORE 1 +FLAGS.SILENT (\\Deleted)")
    ok(other, "EXPUNGE")
    other.close()
    news = ok(raw, "NOOP")
    assert b"* VANISHED 1\r\n" in news and b"* 4 UIDFETCH (FLAGS (\\Seen \\Recent))\r\n" in news
    ok(raw, "UID STORE 3 +FLAGS.SILENT (\\Deleted)")
    assert ok(raw, "EXPUNGE") == [b"* VANISHED 3\r\n"]
    ok(raw, "ENABLE CONDSTORE")
    line = ok(raw, "UID FETCH 2 (FLAGS MODSEQ)")[0]
    assert re.fullmatch(rb"\* 2 UIDFETCH \(FLAGS \(\\Flagged \\Recent\) MODSEQ \(\d+\)\)\r\n", line)


def test_uid_commands_and_saved_results_work(imap, raw):
    uidonly(imap, raw)
    n = raw.n + 1
    assert ok(raw, "UID SEARCH RETURN (ALL SAVE) UID 2:3") == [b'* ESEARCH (TAG "t%d") UID ALL 2:3\r\n' % n]
    assert ok(raw, "UID FETCH $ (FLAGS)") == [b"* 2 UIDFETCH (FLAGS (\\Recent))\r\n",
                                              b"* 3 UIDFETCH (FLAGS (\\Recent))\r\n"]
    assert ok(raw, "UID SORT (SIZE) UTF-8 UID $") == [b"* SORT 2 3\r\n"]
    assert ok(raw, "UID MOVE 1 Trash")[1:] == [b"* VANISHED 1\r\n"]
    assert raw.cmd("UID COPY 2 Trash")[-1].startswith(b"t%d OK [COPYUID " % raw.n)
