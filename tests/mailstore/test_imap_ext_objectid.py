"""OBJECTID (RFC 8474) and CREATE-SPECIAL-USE (RFC 6154): the RFCs'
examples against the running server, and that the identifiers stay what
they were through RENAME, MOVE, COPY and a restart."""
from __future__ import annotations

import re

from ext_messages import mail, ok
from imaptest_support import ALICE, RawClient, ServerThread

ID = rb"[A-Za-z0-9_-]+"


def mailboxid(lines: list[bytes]) -> bytes:
    m = re.search(rb"MAILBOXID \((" + ID + rb")\)", b"".join(lines))
    assert m, lines
    return m.group(1)


def ids(raw, seqset: str) -> list[tuple[bytes, bytes]]:
    return [(m.group(1), m.group(2)) for line in ok(raw, f"FETCH {seqset} (EMAILID THREADID)")
            for m in [re.search(rb"EMAILID \((" + ID + rb")\) THREADID \((" + ID + rb")\)", line)]]


def test_mailboxid_rfc8474_examples(imap, raw):
    """RFC 8474 4.1-4.3: CREATE answers the new MAILBOXID, SELECT and
    STATUS say it; RENAME keeps it; a folder made again has a new one;
    RENAME INBOX leaves INBOX its own."""
    assert b" OBJECTID" in ok(raw, "CAPABILITY")[0]
    created = raw.cmd("CREATE foo")[-1]
    assert re.fullmatch(rb"t\d+ OK \[MAILBOXID \((F" + ID + rb")\)\] Create completed.\r\n", created)
    foo = mailboxid([created])
    assert mailboxid(ok(raw, "STATUS foo (MAILBOXID)")) == foo
    ok(raw, "RENAME foo bar")
    assert mailboxid(ok(raw, "SELECT bar")) == foo
    ok(raw, "UNSELECT")
    ok(raw, "DELETE bar")
    assert mailboxid([raw.cmd("CREATE bar")[-1]]) != foo
    inbox = mailboxid(ok(raw, "STATUS INBOX (MAILBOXID)"))
    imap.deliver(ALICE, mail("x"))
    ok(raw, "RENAME INBOX moved")
    assert mailboxid(ok(raw, "STATUS INBOX (MAILBOXID)")) == inbox
    assert mailboxid(ok(raw, "STATUS moved (MAILBOXID)")) not in (inbox, foo)


def test_emailid_and_threadid(imap, raw):
    """RFC 8474 5.1-5.2: a message keeps its EMAILID through COPY (the
    copy shares it) and MOVE; replies share their thread's THREADID; both
    are search keys."""
    imap.deliver(ALICE, mail("plan", msgid="root@x"))
    imap.deliver(ALICE, mail("Re: plan", msgid="reply@x", refs="root@x"))
    imap.deliver(ALICE, mail("other", msgid="other@x"))
    ok(raw, "SELECT INBOX")
    (e1, t1), (e2, t2), (e3, t3) = ids(raw, "1:3")
    assert e1.startswith(b"M") and t1.startswith(b"T")
    assert len({e1, e2, e3}) == 3 and t1 == t2 != t3
    ok(raw, "COPY 1 Drafts")
    ok(raw, "MOVE 2 Trash")
    ok(raw, "EXAMINE Drafts")
    assert ids(raw, "1") == [(e1, t1)]
    ok(raw, "EXAMINE Trash")
    assert ids(raw, "1") == [(e2, t2)]
    ok(raw, "SELECT INBOX")
    assert ok(raw, f"SEARCH EMAILID {e3.decode()}") == [b"* SEARCH 2\r\n"]
    assert ok(raw, f"UID SEARCH THREADID {t1.decode()}") == [b"* SEARCH 1\r\n"]
    assert raw.cmd("SEARCH EMAILID")[-1].startswith(b"t%d BAD" % raw.n)


def test_identifiers_survive_a_restart(tmp_path, config, directory):
    server = ServerThread(config, directory)
    try:
        server.deliver(ALICE, mail("x", msgid="a@x"))
        c = RawClient(server.port)
        c.login()
        before = (mailboxid(ok(c, "SELECT INBOX")), ids(c, "1"))
        c.close()
    finally:
        server.stop()
    server = ServerThread(config, directory)
    try:
        c = RawClient(server.port)
        c.login()
        assert (mailboxid(ok(c, "SELECT INBOX")), ids(c, "1")) == before
        c.close()
    finally:
        server.stop()


def test_create_special_use(imap, raw):
    """RFC 6154 5.3's example: CREATE MySpecial (USE (\\Drafts \\Sent))
    and a use the server cannot give."""
    caps = ok(raw, "CAPABILITY")[0]
    assert b" SPECIAL-USE" in caps and b" CREATE-SPECIAL-USE" in caps
    ok(raw, "CREATE MySpecial (USE (\\Drafts \\Sent))")
    assert ok(raw, 'LIST "" MySpecial') == [b'* LIST (\\HasNoChildren \\Drafts \\Sent) "/" "MySpecial"\r\n']
    assert raw.cmd("CREATE Everything (USE (\\All))")[-1] == (
        b"t%d NO [USEATTR] \\All is a virtual folder this server does not keep\r\n" % raw.n)
    assert raw.cmd("CREATE Odd (USE (\\Important))")[-1] == (
        b"t%d NO [USEATTR] Unknown special use \\Important\r\n" % raw.n)
    assert b"Everything" not in b"".join(ok(raw, 'LIST "" "*"'))
    ok(raw, "CREATE Old (USE (\\Archive))")
    ok(raw, "RENAME Old Archive/2023")
    listed = ok(raw, 'LIST (SPECIAL-USE) "" "*"')
    assert b'* LIST (\\HasNoChildren \\Archive) "/" "Archive/2023"\r\n' in listed
    assert b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"\r\n' in listed
    assert not [ln for ln in listed if b'"INBOX"' in ln]
    assert raw.cmd("CREATE X (COLOUR red)")[-1] == (
        b"t%d BAD Error in IMAP command CREATE: Unknown CREATE parameter COLOUR\r\n" % raw.n)
