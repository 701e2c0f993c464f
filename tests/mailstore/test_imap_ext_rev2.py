"""IMAP4rev2 (RFC 9051) beside IMAP4rev1, and UTF8=ACCEPT (RFC 6855): what
changes for a client that enables them — the RFCs' examples against the
running server — and that a rev1 client beside it sees rev1."""
from __future__ import annotations

from ext_messages import mail, ok, send_with_literals
from imaptest_support import ALICE, RawClient


def enabled(imap, what: str = "IMAP4rev2") -> RawClient:
    c = RawClient(imap.port)
    c.login()
    assert ok(c, f"ENABLE {what}") == [f"* ENABLED {what}\r\n".encode()]
    return c


def test_imap4rev2_is_offered_beside_imap4rev1(imap, raw):
    caps = ok(raw, "CAPABILITY")[0].split()
    assert caps[2:4] == [b"IMAP4rev1", b"IMAP4rev2"]
    assert ok(raw, "ENABLE IMAP4rev2") == [b"* ENABLED IMAP4rev2\r\n"]
    assert ok(raw, "ENABLE IMAP4REV2") == [b"* ENABLED\r\n"]


def test_select_has_no_recent_and_says_the_name(imap):
    """RFC 9051 6.3.2's example: no RECENT, a LIST response with the name."""
    for i in range(3):
        imap.deliver(ALICE, mail(f"m{i}"))
    c = enabled(imap)
    lines = ok(c, "SELECT inbox")
    assert b"* 3 EXISTS\r\n" in lines
    assert not [ln for ln in lines if b"RECENT" in ln]
    assert b'* LIST () "/" "INBOX"\r\n' in lines
    assert ok(c, "FETCH 1:3 FLAGS") == [b"* %d FETCH (FLAGS ())\r\n" % n for n in (1, 2, 3)]
    imap.deliver(ALICE, mail("late"))
    assert ok(c, "NOOP") == [b"* 4 EXISTS\r\n"]
    assert ok(c, "FETCH 4 FLAGS") == [b"* 4 FETCH (FLAGS ())\r\n"]


def test_search_answers_esearch(imap):
    """RFC 9051 6.4.4's examples: SEARCH and UID SEARCH answer ESEARCH."""
    for i in range(1, 12):
        imap.deliver(ALICE, mail(f"m{i}", sender="Smith <smith@example.org>" if i == 5 else "jones@example.org"))
    c = enabled(imap)
    ok(c, "SELECT INBOX")
    ok(c, "STORE 2,5,10,11 +FLAGS.SILENT (\\Flagged)")
    n = c.n + 1
    assert ok(c, 'SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"') == [b'* ESEARCH (TAG "t%d") ALL 2,10:11\r\n' % n]
    n += 1
    assert ok(c, "UID SEARCH FLAGGED") == [b'* ESEARCH (TAG "t%d") UID ALL 2,5,10:11\r\n' % n]
    n += 1
    assert ok(c, "SEARCH DELETED") == [b'* ESEARCH (TAG "t%d")\r\n' % n]
    assert ok(c, "SORT (SUBJECT) UTF-8 FLAGGED") == [b"* SORT 10 11 2 5\r\n"]  # SORT stays SORT


def test_mailbox_names_are_utf8(imap, raw):
    """RFC 9051 5.1: names in UTF-8, both ways; ``&`` is a character.  The
    same folders as a rev1 client sees them, in modified UTF-7."""
    c = enabled(imap)
    ok(c, 'CREATE "Café"')
    ok(c, 'CREATE "A&B"')
    names = b"".join(ok(c, 'LIST "" "*"'))
    assert "{5}\r\nCafé".encode() in names and b'"A&B"' in names
    assert ok(c, 'STATUS "Café" (MESSAGES)') == ["* STATUS {5}\r\nCafé (MESSAGES 0)\r\n".encode()]
    rev1 = b"".join(ok(raw, 'LIST "" "*"'))
    assert b'"Caf&AOk-"' in rev1 and b'"A&-B"' in rev1
    assert b'"Caf&AOk-"' in ok(raw, 'STATUS "Caf&AOk-" (MESSAGES)')[0]
    assert c.cmd(b'SELECT "Caf\xc3"')[-1].startswith(b"t%d BAD" % c.n)  # not UTF-8


def test_list_says_nonexistent_for_a_parent_only(imap, raw):
    ok(raw, "CREATE Projects/2024")
    ok(raw, "DELETE Projects")  # its child stays: "Projects" is only a parent now
    assert b'* LIST (\\Noselect \\HasChildren) "/" "Projects"\r\n' in ok(raw, 'LIST "" "%"')
    assert b'* LIST (\\NonExistent \\HasChildren) "/" "Projects"\r\n' in ok(raw, 'LIST "" ("%")')
    c = enabled(imap)
    assert b'* LIST (\\NonExistent \\HasChildren) "/" "Projects"\r\n' in ok(c, 'LIST "" "%"')


def test_status_deleted_and_size(imap):
    for i in range(3):
        imap.deliver(ALICE, mail(f"m{i}"))
    c = enabled(imap)
    ok(c, "SELECT INBOX")
    ok(c, "STORE 1:2 +FLAGS.SILENT (\\Deleted)")
    line = ok(c, "STATUS INBOX (MESSAGES DELETED SIZE)")[0]
    assert line.startswith(b'* STATUS "INBOX" (MESSAGES 3 DELETED 2 SIZE ')


def test_a_rev1_session_beside_is_unchanged(imap, raw):
    for i in range(2):
        imap.deliver(ALICE, mail(f"m{i}"))
    c = enabled(imap)
    ok(c, "SELECT INBOX")
    lines = ok(raw, "SELECT INBOX")
    assert b"* 0 RECENT\r\n" in lines and not [ln for ln in lines if ln.startswith(b"* LIST")]
    assert ok(raw, "SEARCH ALL") == [b"* SEARCH 1 2\r\n"]


# -- UTF8=ACCEPT ----------------------------------------------------------------------------

def test_utf8_accept_names_and_append(imap, raw):
    """RFC 6855: UTF-8 names once enabled (before, a UTF-8 name is refused
    as IMAP4rev1 says), and APPEND ... UTF8 (~{n}) of a message with a raw
    UTF-8 header, returned byte for byte."""
    assert b" UTF8=ACCEPT" in ok(raw, "CAPABILITY")[0]
    assert raw.cmd('CREATE "Réunions"'.encode())[-1] == (
        b"t%d NO [CANNOT] Mailbox name is not valid modified UTF-7\r\n" % raw.n)
    c = enabled(imap, "UTF8=ACCEPT")
    ok(c, 'CREATE "Réunions"')
    message = "From: Zoë <zoe@example.org>\r\nSubject: Ça va?\r\n\r\nOui.\r\n".encode()
    lines = send_with_literals(c, b"A1", ['APPEND "Réunions" UTF8 (~{%d}\r\n'.encode() % len(message), message, b")"])
    assert lines[-1].startswith(b"A1 OK [APPENDUID ")
    ok(c, 'SELECT "Réunions"')
    assert ok(c, "FETCH 1 BODY.PEEK[]")[0] == b"* 1 FETCH (BODY[] {%d}\r\n" % len(message) + message + b")\r\n"
    assert b'"R&AOk-unions"' in b"".join(ok(raw, 'LIST "" "*"'))
