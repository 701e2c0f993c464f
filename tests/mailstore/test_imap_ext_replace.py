"""REPLACE (RFC 8508): a new version of a message stored and the old one
expunged in one command — the RFC's examples (a draft replaced in its own
folder, and moved on to another one), and the failures that must leave
the old message where it was.  (No Python client has a REPLACE call.)"""
from __future__ import annotations

import re

from ext_messages import ok, send_with_literals
from imaptest_support import ALICE, RawClient, ServerThread, make_config, make_directory

DRAFT2 = (b"Date: Thu, 1 Mar 2018 09:48:17 -0500\r\nFrom: Fritz Schmidt <fritz.schmidt@example.net>\r\n"
          b"To: eric.brown@example.com\r\nSubject: happy anniversary\r\n\r\nHappy anniversary!\r\n")


def drafts(imap, n: int = 5) -> None:
    for i in range(n):
        imap.deliver(ALICE, b"Subject: draft %d\r\n\r\nversion 1\r\n" % i, folder="Drafts")


def replace(raw, tag: bytes, head: bytes, data: bytes = DRAFT2) -> list[bytes]:
    return send_with_literals(raw, tag, [head + b" {%d}\r\n" % len(data), data])


def uids(raw) -> list[int]:
    return [int(m) for m in re.findall(rb"UID (\d+)", b"".join(ok(raw, "FETCH 1:* UID")))]


def test_replacing_a_draft_in_its_own_folder(imap, raw):
    """RFC 8508 3.1's first example: APPENDUID, the new message's EXISTS,
    the old one's EXPUNGE, one tagged OK."""
    drafts(imap)
    assert b" REPLACE" in ok(raw, "CAPABILITY")[0]
    ok(raw, "SELECT Drafts")
    validity = int(re.search(rb"UIDVALIDITY (\d+)", b"".join(ok(raw, "STATUS Drafts (UIDVALIDITY)"))).group(1))
    lines = replace(raw, b"A003", b"REPLACE 4 Drafts (\\Seen \\Draft)")
    assert lines[0] == b"* OK [APPENDUID %d 6] Replacement Message ready\r\n" % validity
    assert b"* 4 EXPUNGE\r\n" in lines and b"* 5 EXISTS\r\n" in lines
    assert lines[-1] == b"A003 OK Replace completed.\r\n"
    assert uids(raw) == [1, 2, 3, 5, 6]
    assert ok(raw, "UID FETCH 6 (FLAGS BODY.PEEK[])")[0].endswith(b"\r\n" + DRAFT2 + b")\r\n")


def test_uid_replace_into_another_folder(imap, raw):
    """The RFC's second example: the new version goes to another folder
    (a draft that was sent); only the EXPUNGE is seen here."""
    drafts(imap)
    ok(raw, "SELECT Drafts")
    lines = replace(raw, b"A004", b"UID REPLACE 2 Sent (\\Seen)")
    assert re.fullmatch(rb"\* OK \[APPENDUID \d+ 1\] Replacement Message ready\r\n", lines[0])
    assert lines[1:] == [b"* 2 EXPUNGE\r\n", b"A004 OK Replace completed.\r\n"]
    assert uids(raw) == [1, 3, 4, 5]
    assert ok(raw, "STATUS Sent (MESSAGES)")[0].endswith(b"(MESSAGES 1)\r\n")


def test_other_deleted_messages_are_not_expunged_and_qresync_says_vanished(imap, raw):
    drafts(imap, 3)
    ok(raw, "ENABLE QRESYNC")
    ok(raw, "SELECT Drafts")
    ok(raw, "STORE 1 +FLAGS.SILENT (\\Deleted)")
    lines = replace(raw, b"A5", b"REPLACE 2 Drafts")
    assert b"* VANISHED 2\r\n" in lines
    assert uids(raw) == [1, 3, 4]


def test_a_failed_append_keeps_the_old_message(imap, raw):
    drafts(imap, 2)
    ok(raw, "SELECT Drafts")
    assert replace(raw, b"A6", b"REPLACE 1 Nowhere")[-1] == b"A6 NO [TRYCREATE] Mailbox doesn't exist\r\n"
    assert replace(raw, b"A7", b"REPLACE 1 Drafts", b"")[-1].startswith(b"A7 NO ")  # a zero-byte message
    assert replace(raw, b"A8", b"REPLACE 1 Drafts (\\Bogus)")[-1].startswith(b"A8 BAD ")
    assert replace(raw, b"A9", b"REPLACE 3 Drafts")[-1].startswith(b"A9 BAD ")  # no message 3
    assert replace(raw, b"A10", b"UID REPLACE 9 Drafts")[-1].startswith(b"A10 NO ")  # no UID 9
    bad_url = raw.cmd('REPLACE 1 Drafts CATENATE (URL "/Drafts/;UID=77")')[-1]
    assert bad_url.startswith(b"t%d NO [BADURL " % raw.n)
    assert uids(raw) == [1, 2]
    ok(raw, "EXAMINE Drafts")
    assert replace(raw, b"A11", b"REPLACE 1 Drafts")[-1].startswith(b"A11 NO [READ-ONLY]")


def test_over_quota_keeps_the_old_message(tmp_path):
    cfg = make_config(tmp_path)
    server = ServerThread(cfg, make_directory(cfg, quota=200))
    try:
        server.deliver(ALICE, b"Subject: small\r\n\r\nx\r\n", folder="Drafts")
        raw = RawClient(server.port)
        raw.login()
        ok(raw, "SELECT Drafts")
        assert replace(raw, b"A1", b"REPLACE 1 Drafts", DRAFT2 * 2)[-1].startswith(b"A1 NO [OVERQUOTA]")
        assert uids(raw) == [1]
        raw.close()
    finally:
        server.stop()
