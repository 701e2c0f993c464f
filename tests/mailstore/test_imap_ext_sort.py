"""SORT (RFC 5256), SORT=DISPLAY (RFC 5957) and ESORT (RFC 5267): the RFCs'
examples and rules against the running server — base subjects, sent dates,
addresses, REVERSE, ties in mailbox order — and that sorting a folder
reads its messages once, keeping their header data in the index."""
from __future__ import annotations

import os

import pytest

from correo_server.mailstore.imap.summary import base_subject, casemap
from ext_messages import at, mail, ok
from imaptest_support import ALICE


@pytest.mark.parametrize("subject, base, reply", [
    ("hello", "hello", False),
    ("Re: hello", "hello", True),
    ("RE: re: Fwd: hello", "hello", True),
    ("Fw: hello (fwd)", "hello", True),
    ("hello (fwd) (FWD)  ", "hello", True),
    ("[list] Re: hello", "hello", True),
    ("Re [list]: hello", "hello", True),
    ("[list] hello", "hello", False),
    ("[list]", "[list]", False),
    ("[fwd: hello]", "hello", True),
    ("[Fwd: Re: [list] hello]", "hello", True),
    ("Re:   hello \t  world", "hello world", True),
    ("=?utf-8?q?Re=3A_caf=C3=A9?=", "café", True),
    ("Reply: hello", "Reply: hello", False),
    ("[foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)", "b", True),
])
def test_base_subject_extraction(subject, base, reply):
    """RFC 5256 2.1, steps 1-6."""
    assert base_subject(subject.encode()) == (base, reply)


def test_collation_is_unicode_casemap():
    assert casemap("abc_") == "ABC_" and casemap("ABC") == casemap("abc")
    assert casemap("Café") == casemap("CAFÉ") == casemap("cafe\u0301".upper())
    assert casemap("_") > casemap("z")  # i;ascii-casemap: letters as capitals, so "_" comes after


def deliver_all(imap, messages) -> None:
    for m in messages:
        imap.deliver(ALICE, m)


def test_sort_rfc5256_examples(imap, raw):
    """The shapes of RFC 5256's examples: SORT (SUBJECT) with a search
    key, (SUBJECT REVERSE DATE), and no match at all."""
    deliver_all(imap, [
        mail("Re: lunch", date=at(1)),            # 1
        mail("lunch", date=at(5)),                # 2
        mail("Agenda", date=at(3)),               # 3
        mail("Fwd: agenda", date=at(4)),          # 4
        mail("agenda (fwd)", date=at(2)),         # 5
    ])
    raw.cmd("SELECT INBOX")
    assert b" SORT " in ok(raw, "CAPABILITY")[0]
    assert ok(raw, "SORT (SUBJECT) UTF-8 SINCE 1-Feb-1994") == [b"* SORT 3 4 5 1 2\r\n"]
    assert ok(raw, "SORT (SUBJECT REVERSE DATE) UTF-8 ALL") == [b"* SORT 4 3 5 2 1\r\n"]
    assert ok(raw, 'SORT (SUBJECT) US-ASCII TEXT "not in mailbox"') == [b"* SORT\r\n"]
    assert ok(raw, "SORT (DATE) UTF-8 ALL") == [b"* SORT 1 5 3 4 2\r\n"]
    assert ok(raw, "SORT (REVERSE DATE) UTF-8 2:4") == [b"* SORT 2 4 3\r\n"]


def test_uid_sort_answers_uids(imap, raw):
    deliver_all(imap, [mail("b"), mail("c"), mail("a")])
    raw.cmd("SELECT INBOX")
    raw.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)")
    raw.cmd("EXPUNGE")
    assert ok(raw, "SORT (SUBJECT) UTF-8 ALL") == [b"* SORT 2 1\r\n"]
    assert ok(raw, "UID SORT (SUBJECT) UTF-8 ALL") == [b"* SORT 3 2\r\n"]


def append(raw, data: bytes, when: str | None = None) -> None:
    date = f' "{when}"' if when else ""
    raw.send(b"t0 APPEND INBOX%s {%d+}\r\n" % (date.encode(), len(data)) + data + b"\r\n")
    assert raw.read_response(b"t0")[-1].startswith(b"t0 OK")


def test_sort_dates_use_the_internal_date_when_there_is_no_date_field(imap, raw):
    append(raw, mail("x", date=at(0, hour=23)), "14-May-2024 08:00:00 +0000")
    append(raw, mail("x", date=None), "14-May-2024 12:00:00 +0000")
    append(raw, mail("x", date="not a date"), "14-May-2024 10:30:00 +0000")
    append(raw, mail("x", date="Tue, 14 May 2024 09:00:00 -0200"), "14-May-2024 08:00:00 +0000")
    raw.cmd("SELECT INBOX")
    # by sent date: 4 is 11:00 UTC, 1 23:00; 2 and 3 have no usable Date: their internal dates count
    assert ok(raw, "SORT (DATE) UTF-8 ALL") == [b"* SORT 3 4 2 1\r\n"]
    assert ok(raw, "SORT (ARRIVAL) UTF-8 ALL") == [b"* SORT 1 4 3 2\r\n"]
    assert ok(raw, "SORT (REVERSE ARRIVAL) UTF-8 ALL") == [b"* SORT 2 3 1 4\r\n"]  # ties stay in mailbox order


def test_sort_by_addresses_size_and_several_criteria(imap, raw):
    deliver_all(imap, [
        mail("a", sender="Zed <b@example.org>", to="c@x.org", cc="Z <z@x.org>", body="x" * 30),
        mail("a", sender="Amy <c@example.org>", to="\"B\" <a@x.org>", body="x" * 10),
        mail("b", sender="a@example.org", to="group: m@x.org, n@x.org;", cc="a@x.org", body="x" * 20),
    ])
    raw.cmd("SELECT INBOX")
    assert ok(raw, "SORT (FROM) UTF-8 ALL") == [b"* SORT 3 1 2\r\n"]
    assert ok(raw, "SORT (TO) UTF-8 ALL") == [b"* SORT 2 1 3\r\n"]  # a, c, group
    assert ok(raw, "SORT (CC) UTF-8 ALL") == [b"* SORT 2 3 1\r\n"]  # none sorts first
    assert ok(raw, "SORT (SIZE) UTF-8 ALL") == [b"* SORT 2 3 1\r\n"]
    assert ok(raw, "SORT (SUBJECT REVERSE SIZE) UTF-8 ALL") == [b"* SORT 1 2 3\r\n"]
    assert ok(raw, "SORT (DISPLAYFROM) UTF-8 ALL") == [b"* SORT 3 2 1\r\n"]  # a@example.org, Amy, Zed
    assert ok(raw, "SORT (DISPLAYTO) UTF-8 ALL") == [b"* SORT 2 1 3\r\n"]  # B, c@x.org, group


def test_esort_answers_in_esearch_form(imap, raw):
    deliver_all(imap, [mail("c"), mail("a"), mail("b"), mail("d")])
    raw.cmd("SELECT INBOX")
    n = raw.n + 1
    assert ok(raw, "SORT RETURN (ALL COUNT) (SUBJECT) UTF-8 ALL") == [
        b'* ESEARCH (TAG "t%d") ALL 2:3,1,4 COUNT 4\r\n' % n]
    n += 1
    assert ok(raw, "UID SORT RETURN (MIN MAX) (SUBJECT) UTF-8 ALL") == [
        b'* ESEARCH (TAG "t%d") UID MIN 1 MAX 4\r\n' % n]


def test_sort_errors(imap, raw):
    deliver_all(imap, [mail("a")])
    raw.cmd("SELECT INBOX")
    assert raw.cmd("SORT (SUBJECT) KOI8-R ALL")[-1] == (
        b"t%d NO [BADCHARSET (US-ASCII UTF-8)] Unsupported charset.\r\n" % raw.n)
    assert raw.cmd("SORT (COLOUR) UTF-8 ALL")[-1] == (
        b"t%d BAD Error in IMAP command SORT: Unknown sort criterion COLOUR\r\n" % raw.n)
    assert raw.cmd("SORT () UTF-8 ALL")[-1].startswith(b"t%d BAD " % raw.n)
    assert raw.cmd("SORT (SUBJECT) UTF-8")[-1] == (
        b"t%d BAD Error in IMAP command SORT: Missing search criteria after the charset\r\n" % raw.n)
    assert raw.cmd("SORT (REVERSE) UTF-8 ALL")[-1].startswith(b"t%d BAD " % raw.n)


def test_a_folder_is_read_once_for_sorting(imap, raw):
    """The header data SORT needs is kept in the index: with the message
    files unreadable, a second SORT (even after a restart of the
    session's folder cache) still sorts them right."""
    deliver_all(imap, [mail(s) for s in ("d", "b", "a", "c")])
    raw.cmd("SELECT INBOX")
    assert ok(raw, "SORT (SUBJECT) UTF-8 ALL") == [b"* SORT 3 2 4 1\r\n"]
    folder = imap.folder(ALICE)
    paths = [folder.path / m.path for m in folder.messages()]
    for p in paths:
        os.chmod(p, 0)
    try:
        from correo_server.mailstore.imap.summaries import SUMMARIES
        SUMMARIES._caches.clear()  # the memory cache gone: the index answers
        assert ok(raw, "SORT (REVERSE SUBJECT) UTF-8 ALL") == [b"* SORT 1 4 2 3\r\n"]
    finally:
        for p in paths:
            os.chmod(p, 0o600)
