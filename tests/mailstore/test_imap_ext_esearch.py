"""ESEARCH (RFC 4731) and SEARCHRES (RFC 5182): the RFCs' examples against
the running server, exact protocol lines."""
from __future__ import annotations

from imaptest_support import ALICE


def ok(raw, command: str) -> list[bytes]:
    """The untagged lines of a command that must succeed."""
    lines = raw.cmd(command)
    assert lines[-1].startswith(b"t%d OK " % raw.n), lines
    return lines[:-1]


def message(n: int, sender: str = "Jones <jones@example.org>") -> bytes:
    return (f"From: {sender}\r\nTo: alice@example.com\r\nSubject: message {n}\r\n"
            f"Date: Tue, 14 May 2024 10:{n:02d}:00 +0000\r\nMessage-ID: <m{n}@example.org>\r\n\r\n"
            f"Body {n}\r\n" + "x" * (n * 500)).encode()


def mailbox_of_eleven(imap, raw) -> None:
    """Eleven messages; 2, 10 and 11 are flagged, and so is 5, which is from Smith."""
    for n in range(1, 12):
        imap.deliver(ALICE, message(n, "Smith <smith@example.org>" if n == 5 else "Jones <jones@example.org>"))
    assert raw.cmd("SELECT INBOX")[-1].split()[1] == b"OK"
    raw.cmd("STORE 2,5,10,11 +FLAGS.SILENT (\\Flagged)")


def test_esearch_capability_and_the_rfc4731_examples(imap, raw):
    mailbox_of_eleven(imap, raw)
    assert b" ESEARCH" in raw.cmd("CAPABILITY")[0]
    n = raw.n + 1
    assert ok(raw, 'SEARCH RETURN (MIN COUNT) FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"') == [
        b'* ESEARCH (TAG "t%d") MIN 2 COUNT 3\r\n' % n]
    n += 1
    assert raw.cmd('SEARCH RETURN () FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"')[0] == (
        b'* ESEARCH (TAG "t%d") ALL 2,10:11\r\n' % n)
    n += 1
    assert raw.cmd("UID SEARCH RETURN (MIN MAX) 1:5000")[0] == b'* ESEARCH (TAG "t%d") UID MIN 1 MAX 11\r\n' % n
    n += 1
    assert raw.cmd("SEARCH RETURN (MIN MAX ALL COUNT) FLAGGED")[0] == (
        b'* ESEARCH (TAG "t%d") MIN 2 MAX 11 ALL 2,5,10:11 COUNT 4\r\n' % n)


def test_esearch_with_nothing_found_says_only_the_count(imap, raw):
    mailbox_of_eleven(imap, raw)
    n = raw.n + 1
    assert raw.cmd("SEARCH RETURN (MIN MAX ALL COUNT) DELETED")[0] == b'* ESEARCH (TAG "t%d") COUNT 0\r\n' % n
    n += 1
    assert raw.cmd("UID SEARCH RETURN (ALL) DELETED")[0] == b'* ESEARCH (TAG "t%d") UID\r\n' % n


def test_esearch_numbers_follow_expunges_and_uids(imap, raw):
    mailbox_of_eleven(imap, raw)
    raw.cmd("STORE 1:3 +FLAGS.SILENT (\\Deleted)")
    raw.cmd("EXPUNGE")
    n = raw.n + 1
    assert raw.cmd("SEARCH RETURN (ALL) FLAGGED")[0] == b'* ESEARCH (TAG "t%d") ALL 2,7:8\r\n' % n
    n += 1
    assert raw.cmd("UID SEARCH RETURN (ALL) FLAGGED")[0] == b'* ESEARCH (TAG "t%d") UID ALL 5,10:11\r\n' % n


def test_esearch_with_modseq_reports_the_highest_modseq_of_what_it_reports(imap, raw):
    """RFC 7162 3.1.5 with RFC 4731: MIN and MAX alone report the MODSEQ of
    those messages; ALL and COUNT the highest of all found."""
    for n in range(1, 5):
        imap.deliver(ALICE, message(n))
    raw.cmd("ENABLE CONDSTORE")
    raw.cmd("SELECT INBOX")
    modseq = {}
    for n in (1, 3, 2, 4):
        line = raw.cmd(f"STORE {n} +FLAGS (\\Seen)")[0]
        modseq[n] = int(line.split(b"MODSEQ (")[1].split(b")")[0])
    tag = raw.n + 1
    assert raw.cmd("SEARCH RETURN (MIN) 1:3 MODSEQ 1")[0] == (
        b'* ESEARCH (TAG "t%d") MIN 1 MODSEQ %d\r\n' % (tag, modseq[1]))
    tag += 1
    assert raw.cmd("SEARCH RETURN (MAX) 1:3 MODSEQ 1")[0] == (
        b'* ESEARCH (TAG "t%d") MAX 3 MODSEQ %d\r\n' % (tag, modseq[3]))
    tag += 1
    assert raw.cmd("SEARCH RETURN (COUNT) 1:3 MODSEQ 1")[0] == (
        b'* ESEARCH (TAG "t%d") COUNT 3 MODSEQ %d\r\n' % (tag, modseq[2]))


def test_search_return_syntax_errors_are_bad(imap, raw):
    mailbox_of_eleven(imap, raw)
    assert raw.cmd("SEARCH RETURN (FIRST) ALL")[-1] == (
        b"t%d BAD Error in IMAP command SEARCH: Unknown SEARCH return option FIRST\r\n" % raw.n)
    assert raw.cmd("SEARCH RETURN (MIN)")[-1] == (
        b"t%d BAD Error in IMAP command SEARCH: Missing search criteria after RETURN (...)\r\n" % raw.n)
    assert raw.cmd("SEARCH RETURN MIN ALL")[-1].startswith(b"t%d BAD " % raw.n)


# -- SEARCHRES ---------------------------------------------------------------------------

def test_searchres_save_then_use_dollar_in_fetch_copy_and_search(imap, raw):
    """RFC 5182's examples: SAVE gives no response of its own; ``$`` is the
    result in FETCH, UID SEARCH and COPY."""
    mailbox_of_eleven(imap, raw)
    assert b" SEARCHRES" in raw.cmd("CAPABILITY")[0]
    assert ok(raw, 'SEARCH RETURN (SAVE) FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"') == []
    lines = raw.cmd("FETCH $ (UID FLAGS)")
    assert lines[:-1] == [b"* %d FETCH (UID %d FLAGS (\\Flagged \\Recent))\r\n" % (n, n) for n in (2, 10, 11)]
    n = raw.n + 1
    # the first is 2 KB and more, the others over 4 KB
    assert raw.cmd("UID SEARCH RETURN (ALL) UID $ SMALLER 4096")[0] == b'* ESEARCH (TAG "t%d") UID ALL 2\r\n' % n
    assert raw.cmd("UID SEARCH UID $ SMALLER 4096")[0] == b"* SEARCH 2\r\n"
    assert raw.cmd("SEARCH $")[0] == b"* SEARCH 2 10 11\r\n"
    assert raw.cmd('COPY $ "Drafts"')[-1] == b"t%d OK [COPYUID %s 2,10:11 1:3] Copy completed.\r\n" % (
        raw.n, raw.cmd("STATUS Drafts (UIDVALIDITY)")[0].split()[-1].rstrip(b")\r\n"))


def test_searchres_save_with_min_max_keeps_just_those(imap, raw):
    mailbox_of_eleven(imap, raw)
    n = raw.n + 1
    assert ok(raw, "SEARCH RETURN (SAVE MIN MAX) FLAGGED") == [b'* ESEARCH (TAG "t%d") MIN 2 MAX 11\r\n' % n]
    assert raw.cmd("UID SEARCH $")[0] == b"* SEARCH 2 11\r\n"
    raw.cmd("SEARCH RETURN (SAVE COUNT) FLAGGED")
    assert raw.cmd("UID SEARCH $")[0] == b"* SEARCH 2 5 10 11\r\n"


def test_searchres_dollar_in_store_and_uid_expunge_and_after_expunge(imap, raw):
    mailbox_of_eleven(imap, raw)
    raw.cmd("UID SEARCH RETURN (SAVE) UID 3:5")
    assert raw.cmd("STORE $ +FLAGS (\\Deleted)")[:-1] == [
        b"* 3 FETCH (FLAGS (\\Deleted \\Recent))\r\n", b"* 4 FETCH (FLAGS (\\Deleted \\Recent))\r\n",
        b"* 5 FETCH (FLAGS (\\Flagged \\Deleted \\Recent))\r\n"]
    assert raw.cmd("UID EXPUNGE $")[:-1] == [b"* 5 EXPUNGE\r\n", b"* 4 EXPUNGE\r\n", b"* 3 EXPUNGE\r\n"]
    # the saved messages are gone, so "$" is empty now
    assert ok(raw, "FETCH $ UID") == []
    assert raw.cmd("SEARCH $")[0] == b"* SEARCH\r\n"


def test_searchres_dollar_is_empty_after_select_and_after_a_failed_save(imap, raw):
    mailbox_of_eleven(imap, raw)
    assert ok(raw, "FETCH $ UID") == []
    raw.cmd("SEARCH RETURN (SAVE) 1:2")
    assert raw.cmd("SEARCH $")[0] == b"* SEARCH 1 2\r\n"
    assert raw.cmd("SEARCH RETURN (SAVE) CHARSET KOI8-R ALL")[-1] == (
        b"t%d NO [BADCHARSET (US-ASCII UTF-8)] Unsupported charset.\r\n" % raw.n)
    assert raw.cmd("SEARCH $")[0] == b"* SEARCH\r\n"
    raw.cmd("SEARCH RETURN (SAVE) 1:2")
    raw.cmd("SELECT INBOX")
    assert raw.cmd("SEARCH $")[0] == b"* SEARCH\r\n"


def test_dollar_is_no_sequence_set_in_a_list(imap, raw):
    mailbox_of_eleven(imap, raw)
    assert raw.cmd("FETCH $,1 UID")[-1].startswith(b"t%d BAD " % raw.n)
