"""CATENATE (RFC 4469): a message built on the server from TEXT the client
sends and URLs naming parts of messages already there — the RFC's
forwarding example, its BADURL example, and what a client relies on:
nothing stored when one URL fails, the folder checked first, MULTIAPPEND.
(imaptest's ``catenate`` scripts run in test_imaptest.py; no Python client
has a CATENATE call.)"""
from __future__ import annotations

import re

from ext_messages import ok, send_with_literals
from imaptest_support import RawClient, ServerThread, make_config, make_directory

BOUNDARY = b"------------030308070208000400050907"
DRAFT = (b"From: Frank <frank@example.com>\r\nTo: alice@example.com\r\nSubject: Fwd: plans\r\n"
         b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"" + BOUNDARY[2:] + b"\"\r\n\r\n"
         b"--" + BOUNDARY[2:] + b"\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
         b"Here are the plans.\r\n"
         b"--" + BOUNDARY[2:] + b"\r\nContent-Type: application/octet-stream\r\n"
         b"Content-Transfer-Encoding: base64\r\n\r\nAAECAwQF\r\n"
         b"--" + BOUNDARY[2:] + b"--\r\n")
FORWARDED = b"From: Bob <bob@example.com>\r\nSubject: plans\r\n\r\nThe plans themselves.\r\n"


def uidvalidity(raw, mailbox: str) -> int:
    return int(re.search(rb"UIDVALIDITY (\d+)", ok(raw, f"STATUS {mailbox} (UIDVALIDITY)")[0]).group(1))


def append_uid(line: bytes) -> int:
    return int(re.search(rb"APPENDUID \d+ (\d+)", line).group(1))


def body(raw, mailbox: str, uid: int) -> bytes:
    ok(raw, f"EXAMINE {mailbox}")
    line = ok(raw, f"UID FETCH {uid} BODY.PEEK[]")[0]
    return line.split(b"}\r\n", 1)[1].rsplit(b")\r\n", 1)[0]


def put(raw, mailbox: str, data: bytes) -> int:
    reply = send_with_literals(raw, b"P%d" % raw.n, [b"APPEND %s {%d}\r\n" % (mailbox.encode(), len(data)), data])
    assert b" OK " in reply[-1], reply
    return append_uid(reply[-1])


def test_the_rfc4469_forwarding_example(imap, raw):
    """A003 of RFC 4469 appendix A: the draft's header, a new boundary line,
    the draft's first part with its MIME header, another message attached
    whole — five pieces, one message, nothing downloaded."""
    assert b" CATENATE" in ok(raw, "CAPABILITY")[0]
    draft, forwarded = put(raw, "Drafts", DRAFT), put(raw, "Drafts", FORWARDED)
    v = uidvalidity(raw, "Drafts")
    sep = b"\r\n--" + BOUNDARY[2:] + b"\r\n"
    end = b"\r\n--" + BOUNDARY[2:] + b"--\r\n"
    url = f"/Drafts;UIDVALIDITY={v}/;UID={draft}".encode()
    reply = send_with_literals(raw, b"A003", [
        b"APPEND Drafts (\\Seen \\Draft $MDNSent) CATENATE (URL \"%s/;section=HEADER\" TEXT {%d}\r\n"
        % (url, len(sep) - 2), sep[2:],
        b" URL \"%s/;section=1.MIME\" URL \"%s/;section=1\" TEXT {%d}\r\n" % (url, url, len(sep)), sep,
        b" URL \"/Drafts;UIDVALIDITY=%d/;UID=%d\" TEXT {%d}\r\n" % (v, forwarded, len(end)), end,
        b")"])
    assert reply[-1].startswith(b"A003 OK [APPENDUID %d " % v), reply
    new = append_uid(reply[-1])
    header = DRAFT.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    part1_mime = b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    assert body(raw, "Drafts", new) == (header + sep[2:] + part1_mime + b"Here are the plans." + sep
                                        + FORWARDED + end)
    flags = ok(raw, f"UID FETCH {new} FLAGS")[0]
    assert b"\\Draft" in flags and b"$MDNSent" in flags


def test_a_url_to_an_expunged_message_fails_with_badurl_and_stores_nothing(imap, raw):
    """The RFC's second example: the message was expunged meanwhile."""
    gone = put(raw, "Drafts", FORWARDED)
    v = uidvalidity(raw, "Drafts")
    ok(raw, "SELECT Drafts")
    ok(raw, f"UID STORE {gone} +FLAGS.SILENT (\\Deleted)")
    ok(raw, "EXPUNGE")
    url = f"/Drafts;UIDVALIDITY={v}/;UID={gone}/;section=1"
    reply = send_with_literals(raw, b"A003", [b"APPEND Drafts CATENATE (TEXT {6}\r\n", b"Hi: 1\r",
                                              f' URL "{url}")'.encode()])
    assert reply[-1].startswith(b"A003 NO [BADURL " + url.encode() + b"] "), reply  # bare, not quoted (erratum 4046)
    assert ok(raw, "STATUS Drafts (MESSAGES)")[0].endswith(b"(MESSAGES 0)\r\n")


def test_urls_that_do_not_resolve_here(imap, raw):
    uid = put(raw, "INBOX", FORWARDED)
    v = uidvalidity(raw, "INBOX")
    for url in (f"/INBOX;UIDVALIDITY={v + 1}/;UID={uid}",        # the folder was recreated since
                f"/INBOX/;UID={uid + 5}",                        # no such message
                "/Nowhere/;UID=1",                               # no such folder
                f"/INBOX/;UID={uid}/;SECTION=7",                 # no such part
                f"imap://bob@mail.example.com/INBOX/;UID={uid}",  # another user's
                f"/INBOX/;UID={uid};URLAUTH=anonymous:internal:91354a47",
                f";UID={uid}"):                                  # relative, but nothing is selected
        reply = raw.cmd(f'APPEND INBOX CATENATE (URL "{url}")')
        assert reply[-1].startswith(b"t%d NO [BADURL " % raw.n), (url, reply)
    assert ok(raw, "STATUS INBOX (MESSAGES)")[0].endswith(b"(MESSAGES 1)\r\n")


def test_absolute_relative_and_partial_urls(imap, raw):
    uid = put(raw, "INBOX", FORWARDED)
    ok(raw, "SELECT INBOX")
    whole = raw.cmd(f'APPEND INBOX CATENATE (URL "imap://alice%40example.com@mail.example.com/INBOX/;UID={uid}")')
    relative = raw.cmd(f'APPEND INBOX CATENATE (URL ";UID={uid}/;SECTION=TEXT")')
    partial = raw.cmd(f'APPEND INBOX CATENATE (URL "/INBOX/;UID={uid}/;SECTION=HEADER/;PARTIAL=6.3" '
                      f'URL "/INBOX/;UID={uid}/;PARTIAL=100000.1" URL "/INBOX/;UID={uid}/;SECTION=TEXT")')
    got = [body(raw, "INBOX", append_uid(r[-1])) for r in (whole, relative, partial)]
    assert got == [FORWARDED, b"The plans themselves.\r\n", b"Bob" + b"The plans themselves.\r\n"]


def test_the_folder_is_checked_before_the_urls(imap, raw):
    reply = raw.cmd('APPEND Nowhere CATENATE (URL "/INBOX;UIDVALIDITY=1/;UID=99")')
    assert reply[-1] == b"t%d NO [TRYCREATE] Mailbox doesn't exist\r\n" % raw.n


def test_with_multiappend_all_or_none(imap, raw):
    uid = put(raw, "INBOX", FORWARDED)
    reply = raw.cmd(f'APPEND INBOX CATENATE (URL "/INBOX/;UID={uid}") (\\Answered) CATENATE '
                    f'(URL "/INBOX/;UID={uid}/;SECTION=TEXT")')
    assert re.match(rb"t\d+ OK \[APPENDUID \d+ \d+:\d+\]", reply[-1]), reply
    reply = raw.cmd(f'APPEND INBOX CATENATE (URL "/INBOX/;UID={uid}") CATENATE (URL "/INBOX/;UID={uid + 9}")')
    assert b" NO [BADURL /INBOX/;UID=" in reply[-1]
    assert ok(raw, "STATUS INBOX (MESSAGES)")[0].endswith(b"(MESSAGES 3)\r\n")


def test_a_message_over_the_append_limit_is_toobig(tmp_path):
    cfg = make_config(tmp_path, max_literal_bytes=4096)
    server = ServerThread(cfg, make_directory(cfg))
    try:
        raw = RawClient(server.port)
        raw.login()
        big = b"Subject: big\r\n\r\n" + b"x" * 3000 + b"\r\n"
        uid = put(raw, "INBOX", big)
        reply = raw.cmd(f'APPEND INBOX CATENATE (URL "/INBOX/;UID={uid}" URL "/INBOX/;UID={uid}")')
        assert reply[-1].startswith(b"t%d NO [TOOBIG] " % raw.n), reply
        assert ok(raw, "STATUS INBOX (MESSAGES)")[0].endswith(b"(MESSAGES 1)\r\n")
        raw.close()
    finally:
        server.stop()


def test_bad_syntax_is_bad(imap, raw):
    for command in ("APPEND INBOX CATENATE ()", "APPEND INBOX CATENATE (FOO \"x\")",
                    "APPEND INBOX CATENATE (TEXT \"quoted is not a literal\")"):
        assert raw.cmd(command)[-1].startswith(b"t%d BAD " % raw.n), command
