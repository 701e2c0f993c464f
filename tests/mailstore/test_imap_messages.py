"""Messages over IMAP: APPEND, FETCH of every item, SEARCH, STORE, COPY, MOVE,
EXPUNGE, CONDSTORE — checked against known messages, with imaplib and with
exact protocol lines."""
from __future__ import annotations

import imaplib
import re
import time

import pytest

from imaptest_messages import (ATTACHMENT, ATTACHMENT_B64, HTML, INNER_MSG, MIXED, PLAIN_QP, SIMPLE,
                               SIMPLE_BODY, SIMPLE_BODYSTRUCTURE, SIMPLE_ENVELOPE, SIMPLE_HEADER,
                               mixed_bodystructure)
from imaptest_support import ALICE, PASSWORD


def login(imap) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", imap.port)
    client.login(ALICE, PASSWORD)
    return client


def ok(result):
    typ, data = result
    assert typ == "OK", data
    return data


def fetch_one(raw, what: str) -> bytes:
    lines = raw.cmd(f"FETCH 1 {what}")
    assert lines[-1].split()[1] == b"OK", lines
    return b"".join(lines[:-1])


# -- FETCH -----------------------------------------------------------------------------

def test_fetch_envelope_and_bodystructure_of_a_plain_message(imap, raw):
    imap.deliver(ALICE, SIMPLE)
    raw.cmd("SELECT INBOX")
    assert fetch_one(raw, "ENVELOPE") == b"* 1 FETCH (ENVELOPE " + SIMPLE_ENVELOPE + b")\r\n"
    assert fetch_one(raw, "BODYSTRUCTURE") == b"* 1 FETCH (BODYSTRUCTURE " + SIMPLE_BODYSTRUCTURE + b")\r\n"
    body = SIMPLE_BODYSTRUCTURE.replace(b" NIL NIL NIL NIL)", b")")
    assert fetch_one(raw, "BODY") == b"* 1 FETCH (BODY " + body + b")\r\n"


def test_fetch_bodystructure_of_a_multipart_with_attachment_and_forward(imap, raw):
    imap.deliver(ALICE, MIXED)
    raw.cmd("SELECT INBOX")
    assert fetch_one(raw, "BODYSTRUCTURE") == b"* 1 FETCH (BODYSTRUCTURE " + mixed_bodystructure() + b")\r\n"
    assert fetch_one(raw, "BODY") == b"* 1 FETCH (BODY " + mixed_bodystructure(False) + b")\r\n"


def test_fetch_sections_are_exact_slices(imap):
    imap.deliver(ALICE, MIXED)
    client = login(imap)
    ok(client.select("INBOX", readonly=True))
    sections = {
        "1.1": PLAIN_QP,
        "1.2": HTML,
        "2": ATTACHMENT_B64,
        "3": INNER_MSG,
        "3.HEADER": INNER_MSG.split(b"\r\n\r\n")[0] + b"\r\n\r\n",
        "3.TEXT": b"inner body",
        "3.1": b"inner body",
        "2.MIME": b'Content-Type: application/octet-stream; name="data.bin"\r\n'
                  b'Content-Disposition: attachment; filename="data.bin"\r\n'
                  b"Content-Transfer-Encoding: base64\r\n\r\n",
        "HEADER.FIELDS (SUBJECT MESSAGE-ID)": b"Subject: Report\r\nMessage-ID: <mixed@example.org>\r\n\r\n",
        "HEADER.FIELDS.NOT (FROM TO DATE MESSAGE-ID MIME-VERSION CONTENT-TYPE)": b"Subject: Report\r\n\r\n",
    }
    for section, expected in sections.items():
        data = ok(client.fetch("1", f"(BODY.PEEK[{section}])"))
        assert data[0][1] == expected, section
    data = ok(client.fetch("1", "(BODY.PEEK[]<10.20>)"))
    assert data[0][0].endswith(b"BODY[]<10> {20}") and data[0][1] == MIXED[10:30]
    assert ok(client.fetch("1", "(BODY.PEEK[9])"))[0] == b"1 (BODY[9] NIL)"
    base64_text = ok(client.fetch("1", "(BODY.PEEK[2])"))[0][1]
    import base64
    assert base64.b64decode(base64_text) == ATTACHMENT
    client.logout()


def test_envelope_of_group_syntax_has_rfc3501_markers_and_nothing_invented(imap, raw):
    """RFC 5322 groups in To/Cc become RFC 3501's start marker (NIL NIL
    "group" NIL), the members, and the end marker (NIL NIL NIL NIL); an
    empty group is just the two markers, and a group holding only a comment
    has no member (was: an invented MISSING_MAILBOX address)."""
    imap.deliver(ALICE, b"From: a@example.org\r\nTo: group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;\r\n"
                        b"Cc: group:;, group2: (foo) ;\r\nBcc: undisclosed-recipients:;\r\n\r\nbody\r\n")
    raw.cmd("SELECT INBOX")
    env = fetch_one(raw, "ENVELOPE")
    assert (b'((NIL NIL "group" NIL)(NIL NIL "g1" "d1.org")(NIL NIL "g2" "d2.org")(NIL NIL NIL NIL)'
            b'(NIL NIL "group2" NIL)(NIL NIL "g3" "d3.org")(NIL NIL NIL NIL)) '
            b'((NIL NIL "group" NIL)(NIL NIL NIL NIL)(NIL NIL "group2" NIL)(NIL NIL NIL NIL)) '
            b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL))') in env
    assert b"MISSING" not in env


def test_binary_attachment_and_8bit_text_come_back_byte_identical(imap):
    raw_binary = (SIMPLE_HEADER.replace(b"Content-Transfer-Encoding: 8bit", b"Content-Transfer-Encoding: binary")
                  + ATTACHMENT + b"\r\n" + SIMPLE_BODY)
    uid1 = imap.deliver(ALICE, MIXED)
    uid2 = imap.deliver(ALICE, raw_binary)
    client = login(imap)
    ok(client.select("INBOX"))
    data = ok(client.uid("FETCH", f"{uid1},{uid2}", "(BODY[] RFC822.SIZE)"))
    assert data[0][1] == MIXED and b"RFC822.SIZE %d" % len(MIXED) in data[1]
    assert data[2][1] == raw_binary
    assert ok(client.fetch("2", "(RFC822)"))[0][1] == raw_binary
    client.logout()


def test_fetch_every_simple_item_with_exact_grammar(imap, raw):
    raw.cmd("SELECT INBOX")
    lines = raw.cmd(b'APPEND INBOX (\\Flagged $Work) " 7-Feb-1994 21:52:25 -0800" {%d}\r\n' % len(SIMPLE)
                    + SIMPLE)
    assert re.match(rb"t\d+ OK \[APPENDUID \d+ 1\] Append completed", lines[-1]), lines
    out = fetch_one(raw, "(UID FLAGS INTERNALDATE RFC822.SIZE)")
    assert out == (b'* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent $Work) INTERNALDATE " 7-Feb-1994 21:52:25 -0800" '
                   b"RFC822.SIZE %d)\r\n" % len(SIMPLE))
    out = fetch_one(raw, "(RFC822.HEADER)")
    assert out == b"* 1 FETCH (RFC822.HEADER {%d}\r\n" % len(SIMPLE_HEADER) + SIMPLE_HEADER + b")\r\n"
    out = fetch_one(raw, "FAST")
    assert b"FLAGS (" in out and b"INTERNALDATE" in out and b"RFC822.SIZE" in out
    out = fetch_one(raw, "ALL")
    assert b"ENVELOPE (" in out
    out = fetch_one(raw, "FULL")
    assert b"BODY (" in out
    # RFC822.TEXT sets \Seen and the response says so
    out = fetch_one(raw, "(RFC822.TEXT)")
    assert out == b"* 1 FETCH (RFC822.TEXT {%d}\r\n" % len(SIMPLE_BODY) + SIMPLE_BODY + \
        b" FLAGS (\\Flagged \\Seen \\Recent $Work))\r\n"


def test_peek_does_not_set_seen_but_body_does(imap):
    imap.deliver(ALICE, SIMPLE)
    imap.deliver(ALICE, SIMPLE)
    client = login(imap)
    ok(client.select("INBOX"))
    ok(client.fetch("1", "(BODY.PEEK[TEXT])"))
    assert b"\\Seen" not in ok(client.fetch("1", "(FLAGS)"))[0]
    data = ok(client.fetch("1", "(BODY[TEXT])"))
    assert b"FLAGS (\\Seen \\Recent)" in data[1]
    ok(client.select("INBOX", readonly=True))  # EXAMINE never sets \Seen
    data = ok(client.fetch("2", "(BODY[TEXT])"))
    assert b"FLAGS" not in data[1]
    assert "\\Seen" not in imap.folder(ALICE).get(2).flags
    client.logout()


def test_uid_fetch_always_includes_uid_and_handles_star(imap, raw):
    for i in range(3):
        imap.deliver(ALICE, SIMPLE)
    raw.cmd("SELECT INBOX")
    lines = raw.cmd("UID FETCH 2:* FLAGS")
    assert lines[:-1] == [b"* 2 FETCH (UID 2 FLAGS (\\Recent))\r\n", b"* 3 FETCH (UID 3 FLAGS (\\Recent))\r\n"]
    lines = raw.cmd("UID FETCH 99:* (FLAGS)")  # n:* includes the highest UID
    assert lines[0].startswith(b"* 3 FETCH (UID 3 ")
    lines = raw.cmd("UID FETCH 50:60 FLAGS")
    assert len(lines) == 1 and b"OK" in lines[0]
    assert raw.cmd("FETCH 4 FLAGS")[-1].split()[1] == b"BAD"
    assert raw.cmd("FETCH 1:* FLAGS")[-1].split()[1] == b"OK"


# -- APPEND -------------------------------------------------------------------------------

def test_append_with_flags_and_date_and_to_missing_folder(imap):
    client = login(imap)
    date = imaplib.Time2Internaldate(1715760000)
    typ, data = client.append("Drafts", "(\\Draft \\Seen)", date, SIMPLE)
    assert typ == "OK" and b"APPENDUID" in data[0]
    ok(client.select("Drafts"))
    items = ok(client.fetch("1", "(FLAGS INTERNALDATE)"))[0]
    assert b"\\Draft" in items and b"\\Seen" in items
    assert imaplib.Internaldate2tuple(items) is not None
    typ, data = client.append("NoSuchFolder", None, None, SIMPLE)
    assert typ == "NO" and b"[TRYCREATE]" in data[0]
    client.logout()


def test_append_over_quota_is_refused(imap, directory):
    from dataclasses import replace
    d = directory.value
    directory.value = type(d)(tuple(replace(e, quota_bytes=2000) if e.address == ALICE else e
                                    for e in d.mailboxes), d.config)
    client = login(imap)
    typ, data = client.append("INBOX", None, None, b"Subject: big\r\n\r\n" + b"x" * 3000)
    assert typ == "NO" and b"[OVERQUOTA]" in data[0]
    typ, data = client.getquotaroot("INBOX")
    assert data == [[b'"INBOX" ""'], [b'"" (STORAGE 0 1)']]
    client.logout()


# -- STORE --------------------------------------------------------------------------------------

def test_store_variants(imap, raw):
    imap.deliver(ALICE, SIMPLE)
    imap.deliver(ALICE, SIMPLE)
    raw.cmd("SELECT INBOX")
    assert raw.cmd("STORE 1 +FLAGS (\\Seen \\Answered)")[0] == b"* 1 FETCH (FLAGS (\\Answered \\Seen \\Recent))\r\n"
    assert raw.cmd("STORE 1 -FLAGS \\Answered")[0] == b"* 1 FETCH (FLAGS (\\Seen \\Recent))\r\n"
    lines = raw.cmd("STORE 1:2 FLAGS (Work \\Flagged)")
    assert lines[0].startswith(b"* FLAGS (") and b"Work" in lines[0]
    assert lines[1].startswith(b"* OK [PERMANENTFLAGS (") and b"Work \\*)]" in lines[1]
    assert lines[2:4] == [b"* 1 FETCH (FLAGS (\\Flagged \\Recent Work))\r\n",
                          b"* 2 FETCH (FLAGS (\\Flagged \\Recent Work))\r\n"]
    assert len(raw.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)")) == 1
    assert raw.cmd("UID STORE 2 +FLAGS (\\Draft)")[0] == b"* 2 FETCH (UID 2 FLAGS (\\Flagged \\Draft \\Recent Work))\r\n"
    assert raw.cmd("STORE 1 +FLAGS (\\Bogus)")[-1].split()[1] == b"BAD"
    folder = imap.folder(ALICE)
    assert folder.get(1).flags == {"\\Flagged", "Work", "\\Deleted"}
    raw.cmd("EXAMINE INBOX")
    assert b"[READ-ONLY]" in raw.cmd("STORE 1 +FLAGS (\\Seen)")[-1]


# -- COPY, MOVE, EXPUNGE --------------------------------------------------------------------------

def test_copy_move_and_expunge(imap, raw):
    for _ in range(4):
        imap.deliver(ALICE, SIMPLE)
    raw.cmd("SELECT INBOX")
    trash = imap.folder(ALICE, "Trash")
    lines = raw.cmd("COPY 1:2 Trash")
    assert lines[-1].split(b" ", 1)[1].startswith(b"OK [COPYUID %d 1:2 1:2] " % trash.uidvalidity)
    assert b"[TRYCREATE]" in raw.cmd("COPY 1 Nowhere")[-1]
    lines = raw.cmd("UID MOVE 2:3 Trash")
    assert lines[0] == b"* OK [COPYUID %d 2:3 3:4] Moved UIDs.\r\n" % trash.uidvalidity
    assert lines[1:3] == [b"* 3 EXPUNGE\r\n", b"* 2 EXPUNGE\r\n"]
    assert len(trash) == 4
    raw.cmd("STORE 1:2 +FLAGS.SILENT (\\Deleted)")
    lines = raw.cmd("UID EXPUNGE 4")  # only UID 4 goes, although 1 is \Deleted too
    assert lines[0] == b"* 2 EXPUNGE\r\n" and lines[1].split()[1] == b"OK"
    lines = raw.cmd("EXPUNGE")
    assert lines[0] == b"* 1 EXPUNGE\r\n"
    assert raw.cmd("NOOP")[0].split()[1] == b"OK"
    assert imap.folder(ALICE).uids() == []
    lines = raw.cmd("MOVE 1 Trash")
    assert lines[-1].split()[1] == b"BAD"  # no messages left: invalid sequence number


def test_move_onto_the_selected_folder_renumbers_the_messages(imap, raw):
    """RFC 6851 does not forbid it and Dovecot does it: the message gets a
    new UID in the same folder, the client is told COPYUID, EXPUNGE, EXISTS
    (was: NO [CANNOT])."""
    imap.deliver(ALICE, SIMPLE)
    imap.deliver(ALICE, SIMPLE)
    raw.cmd("SELECT INBOX")
    inbox = imap.folder(ALICE)
    lines = raw.cmd("MOVE 1 INBOX")
    assert lines[:3] == [b"* OK [COPYUID %d 1 3] Moved UIDs.\r\n" % inbox.uidvalidity, b"* 1 EXPUNGE\r\n",
                         b"* 2 EXISTS\r\n"]
    assert lines[-1].split()[1] == b"OK"
    assert inbox.uids() == [2, 3]
    assert raw.cmd("UID FETCH 1:* (UID)")[:2] == [b"* 1 FETCH (UID 2)\r\n", b"* 2 FETCH (UID 3)\r\n"]
    assert raw.cmd("UID FETCH 3 BODY.PEEK[]")[0].endswith(SIMPLE + b")\r\n")


def test_close_expunges_and_unselect_does_not(imap, raw):
    imap.deliver(ALICE, SIMPLE)
    imap.deliver(ALICE, SIMPLE)
    raw.cmd("SELECT INBOX")
    raw.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert raw.cmd("UNSELECT")[-1].split()[1] == b"OK"
    assert len(imap.folder(ALICE)) == 2
    raw.cmd("SELECT INBOX")
    [line] = raw.cmd("CLOSE")
    assert line.split(b" ", 1)[1] == b"OK Close completed.\r\n"
    assert len(imap.folder(ALICE)) == 1
    assert raw.cmd("FETCH 1 FLAGS")[-1].split()[1] == b"BAD"  # no mailbox selected


# -- SEARCH ---------------------------------------------------------------------------------------

@pytest.fixture
def searchable(imap, raw):
    """Four messages with known headers, sizes, dates and flags."""
    def msg(frm, to, subject, date, body, extra=b""):
        return (b"From: " + frm + b"\r\nTo: " + to + b"\r\nSubject: " + subject + b"\r\nDate: " + date
                + b"\r\n" + extra + b"\r\n" + body)
    messages = [
        (msg(b"Bob <bob@example.org>", b"alice@example.com", b"Lunch plans", b"Mon, 1 Jan 2024 10:00:00 +0000",
             b"Shall we meet at noon?\r\n", b"X-Priority: 1\r\n"), "(\\Seen)", '"01-Jan-2024 10:00:00 +0000"'),
        (msg(b"Carol <carol@example.net>", b"alice@example.com", b"=?utf-8?q?R=C3=A9sum=C3=A9?=",
             b"Wed, 10 Jan 2024 10:00:00 +0000", b"Attached is my r\xc3\xa9sum\xc3\xa9.\r\n",
             b"Cc: bob@example.org\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"),
         "(\\Flagged \\Answered)", '"10-Jan-2024 10:00:00 +0000"'),
        (msg(b"Dave <dave@example.com>", b"team@example.com", b"Minutes", b"Fri, 2 Feb 2024 10:00:00 +0000",
             b"Q2hlZXNl\r\n" + b"x" * 2000 + b"\r\n", b"Bcc: alice@example.com\r\n"),
         "(\\Deleted Work)", '"02-Feb-2024 10:00:00 +0000"'),
        (msg(b"Bob <bob@example.org>", b"alice@example.com", b"Draft reply", b"Sat, 3 Feb 2024 10:00:00 +0000",
             b"=C3=A9t=C3=A9\r\n", b"Content-Transfer-Encoding: quoted-printable\r\n"
             b"Content-Type: text/plain; charset=utf-8\r\n"),
         "(\\Draft)", '"03-Feb-2024 10:00:00 +0000"'),
    ]
    for data, flags, date in messages:
        lines = raw.cmd(f"APPEND INBOX {flags} {date} {{{len(data)}+}}\r\n".encode() + data)
        assert lines[-1].split()[1] == b"OK", lines
    raw.cmd("SELECT INBOX")
    return raw


def search(raw, criteria: str | bytes) -> list[int]:
    lines = raw.cmd((b"SEARCH " if isinstance(criteria, bytes) else "SEARCH ") + criteria)
    assert lines[-1].split()[1] == b"OK", lines
    [line] = [l for l in lines if l.startswith(b"* SEARCH")]
    return [int(x) for x in line.split()[2:] if x.isdigit()]


@pytest.mark.parametrize("criteria,expected", [
    ("ALL", [1, 2, 3, 4]),
    ("FROM bob", [1, 4]),
    ("FROM \"example.net\"", [2]),
    ("TO team", [3]),
    ("CC bob", [2]),
    ("BCC alice", [3]),
    ("SUBJECT lunch", [1]),
    ("SUBJECT \"r\\\\\"", []),
    ("BODY noon", [1]),
    ("BODY cheese", []),  # base64-looking text in a 7bit part is not decoded
    ("TEXT minutes", [3]),
    ("HEADER X-Priority 1", [1]),
    ("HEADER X-Priority \"\"", [1]),
    ("LARGER 1000", [3]),
    ("SMALLER 1000", [1, 2, 4]),
    ("NOT LARGER 1000", [1, 2, 4]),
    ("SEEN", [1]),
    ("UNSEEN", [2, 3, 4]),
    ("FLAGGED", [2]),
    ("UNFLAGGED", [1, 3, 4]),
    ("ANSWERED", [2]),
    ("UNANSWERED", [1, 3, 4]),
    ("DELETED", [3]),
    ("UNDELETED", [1, 2, 4]),
    ("DRAFT", [4]),
    ("UNDRAFT", [1, 2, 3]),
    ("KEYWORD Work", [3]),
    ("UNKEYWORD Work", [1, 2, 4]),
    ("RECENT", [1, 2, 3, 4]),
    ("NEW", [2, 3, 4]),
    ("OLD", []),
    ("BEFORE 10-Jan-2024", [1]),
    ("ON 10-Jan-2024", [2]),
    ("SINCE 2-Feb-2024", [3, 4]),
    ("SENTBEFORE 2-Jan-2024", [1]),
    ("SENTON 2-Feb-2024", [3]),
    ("SENTSINCE \"3-Feb-2024\"", [4]),
    ("2:3", [2, 3]),
    ("3:*", [3, 4]),
    ("1,4", [1, 4]),
    ("UID 2:*", [2, 3, 4]),
    ("OR FROM dave SUBJECT lunch", [1, 3]),
    ("NOT FROM bob", [2, 3]),
    ("OR (FROM bob SEEN) (DRAFT NOT SEEN)", [1, 4]),
    ("NOT (OR SEEN DRAFT)", [2, 3]),
    ("OR OR SEEN DRAFT FLAGGED", [1, 2, 4]),
    ("FROM bob UNDELETED SINCE 1-Jan-2024", [1, 4]),
])
def test_search_keys(searchable, criteria, expected):
    assert search(searchable, criteria) == expected


def test_search_from_matches_an_address_written_with_comments(imap, raw):
    """RFC 3501 "contains the specified string": the From header matches in
    the form the address is read, so ``<user (comment)@ (comment) domain>``
    is found by ``user@domain`` (was: missed), and display names match too."""
    forms = [b"user-from@domain.org", b"RealFrom <user-from@domain.org>",
             b"<user-from (comment)@ (comment) domain.org>", b"user-from@domain.org (RealFrom)",
             b"user-from1@domain.org, user-from2@domain.org", b"=?utf-8?q?R=C3=A9alFrom?= <USER-FROM@domain.org>"]
    for frm in forms:
        imap.deliver(ALICE, b"From: " + frm + b"\r\nSubject: x\r\n\r\nbody\r\n")
    raw.cmd("SELECT INBOX")
    assert search(raw, "FROM user-from@domain.org") == [1, 2, 3, 4, 6]
    assert search(raw, "FROM realfrom") == [2, 4]
    assert search(raw, b"CHARSET UTF-8 FROM {9+}\r\nr\xc3\xa9alfrom") == [6]
    assert search(raw, 'FROM "realfrom <user-from@domain.org>"') == [2, 4]  # a comment is the name


def test_search_utf8_charset_and_decoding(searchable):
    def lit(text: str) -> bytes:
        data = text.encode("utf-8")
        return b"{%d}\r\n" % len(data) + data
    assert search(searchable, b"CHARSET UTF-8 SUBJECT " + lit("résumé")) == [2]  # an encoded-word
    assert search(searchable, b"CHARSET UTF-8 BODY " + lit("éTé")) == [4]  # quoted-printable body
    assert search(searchable, b"CHARSET UTF-8 TEXT " + lit("RÉSUMÉ")) == [2]  # 8-bit body, any case
    assert search(searchable, b"CHARSET UTF-8 BODY " + lit("résumé")) == [2]
    lines = searchable.cmd("SEARCH CHARSET KOI8-R SUBJECT x")
    assert b"NO [BADCHARSET (US-ASCII UTF-8)]" in lines[-1]


def test_uid_search_returns_uids(imap, searchable):
    searchable.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)")
    searchable.cmd("EXPUNGE")  # message 3 was \Deleted already: UIDs 2 and 4 stay
    assert search(searchable, "FROM bob") == [2]
    lines = searchable.cmd("UID SEARCH FROM bob")
    assert lines[0] == b"* SEARCH 4\r\n"


# -- CONDSTORE ---------------------------------------------------------------------------------------

def test_condstore_modseq_changedsince_and_unchangedsince(imap, raw):
    for _ in range(3):
        imap.deliver(ALICE, SIMPLE)
    lines = raw.cmd("SELECT INBOX (CONDSTORE)")
    [hms] = [l for l in lines if b"HIGHESTMODSEQ" in l]
    highest = int(re.search(rb"HIGHESTMODSEQ (\d+)", hms).group(1))
    lines = raw.cmd("STORE 2 +FLAGS (\\Seen)")
    m = re.match(rb"\* 2 FETCH \(FLAGS \(\\Seen \\Recent\) MODSEQ \((\d+)\)\)", lines[0])
    assert m, lines
    new = int(m.group(1))
    assert new > highest
    lines = raw.cmd(f"FETCH 1:* (FLAGS) (CHANGEDSINCE {highest})")
    assert [l.split()[1] for l in lines[:-1]] == [b"2"] and b"MODSEQ (%d)" % new in lines[0]
    lines = raw.cmd(f"STORE 1:3 (UNCHANGEDSINCE {highest}) +FLAGS.SILENT (\\Flagged)")
    assert lines[-1].split(b" ", 1)[1].startswith(b"OK [MODIFIED 2]"), lines
    assert sorted(l.split()[1] for l in lines[:-1]) == [b"1", b"3"]  # silent, yet MODSEQ is reported
    assert search(raw, f"MODSEQ {new}") == [1, 2, 3]
    lines = raw.cmd(f"SEARCH MODSEQ {new + 1}")
    assert re.match(rb"\* SEARCH 1 3 \(MODSEQ \d+\)", lines[0])
    assert b"HIGHESTMODSEQ" in raw.cmd("STATUS INBOX (HIGHESTMODSEQ)")[0]


def test_enable_condstore(raw):
    assert raw.cmd("ENABLE CONDSTORE")[0] == b"* ENABLED CONDSTORE\r\n"
    assert raw.cmd("ENABLE X-UNKNOWN")[0] == b"* ENABLED\r\n"


def test_envelope_and_bodystructure_are_read_from_the_index_once_known(imap, raw, monkeypatch):
    """The first FETCH ENVELOPE BODYSTRUCTURE parses the message and keeps
    the result in the folder's index; later ones — even after the server's
    memory is cleared — answer the same bytes without reading the message."""
    from correo_server.mailstore.imap import session as session_module
    from correo_server.mailstore.imap.fetchcache import KIND, StructureCache
    from correo_server.mailstore.store import Folder
    imap.deliver(ALICE, SIMPLE)
    raw.cmd("SELECT INBOX")
    first = raw.cmd("FETCH 1 (ENVELOPE BODYSTRUCTURE BODY)")
    assert first[0] == (b"* 1 FETCH (ENVELOPE " + SIMPLE_ENVELOPE + b" BODYSTRUCTURE " + SIMPLE_BODYSTRUCTURE
                        + b" BODY " + SIMPLE_BODYSTRUCTURE.replace(b" NIL NIL NIL NIL)", b")") + b")\r\n")
    inbox = imap.folder(ALICE)
    deadline = time.monotonic() + 10
    while not imap.call(inbox.message_data_for(KIND, [1])):  # saved in the background
        assert time.monotonic() < deadline
        time.sleep(0.02)
    monkeypatch.setattr(session_module, "_STRUCTURES", StructureCache())
    monkeypatch.setattr(session_module, "_CACHE", session_module.F.ParsedCache())

    async def no_reading(self, uid):
        raise AssertionError("the message was read")
    monkeypatch.setattr(Folder, "read", no_reading)
    again = raw.cmd("FETCH 1 (ENVELOPE BODYSTRUCTURE BODY)")
    assert again[0] == first[0] and again[-1].split()[1] == b"OK"
