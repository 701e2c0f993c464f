"""BINARY (RFC 3516): decoded parts over FETCH, literal8 both ways, and
what a binary APPEND stores."""
from __future__ import annotations

import re

from ext_messages import ok, send_with_literals
from imaptest_messages import ATTACHMENT, INNER_MSG, MIXED
from imaptest_support import ALICE


def literal_of(line: bytes, key: bytes) -> tuple[bytes, bytes]:
    """(``{`` or ``~{``, the literal's bytes) after ``key`` in a FETCH response."""
    m = re.search(re.escape(key) + rb" (~?)\{(\d+)\}\r\n", line)
    assert m, line
    start = m.end()
    return m.group(1), line[start:start + int(m.group(2))]


def test_binary_gives_decoded_parts(imap, raw):
    imap.deliver(ALICE, MIXED)
    assert b" BINARY" in ok(raw, "CAPABILITY")[0]
    ok(raw, "SELECT INBOX")
    line = b"".join(ok(raw, "FETCH 1 (BINARY.SIZE[2] BINARY.PEEK[2])"))
    assert b"BINARY.SIZE[2] %d " % len(ATTACHMENT) in line
    assert literal_of(line, b"BINARY[2]") == (b"~", ATTACHMENT)  # it has a NUL: literal8
    line = b"".join(ok(raw, "FETCH 1 (BINARY.PEEK[1.1] BINARY.PEEK[1.2] BINARY.PEEK[3])"))
    assert literal_of(line, b"BINARY[1.1]") == (b"", b"Caf\xe9 report attached.Second line.")
    assert literal_of(line, b"BINARY[1.2]") == (b"", "<p>Café report</p>".encode())
    assert literal_of(line, b"BINARY[3]") == (b"", INNER_MSG)
    line = b"".join(ok(raw, "FETCH 1 BINARY.PEEK[]"))
    assert literal_of(line, b"BINARY[]") == (b"", MIXED)


def test_binary_partial_and_seen(imap, raw):
    imap.deliver(ALICE, MIXED)
    ok(raw, "SELECT INBOX")
    line = b"".join(ok(raw, "FETCH 1 (BINARY.PEEK[2]<100.10> FLAGS)"))
    assert literal_of(line, b"BINARY[2]<100>") == (b"", ATTACHMENT[100:110])
    assert b"FLAGS (\\Recent)" in line  # PEEK leaves \Seen alone
    line = b"".join(ok(raw, "FETCH 1 BINARY[2]<0.3>"))
    assert literal_of(line, b"BINARY[2]<0>") == (b"~", b"\x00\x01\x02")
    assert b"FLAGS (\\Seen \\Recent)" in line


def test_unknown_transfer_encoding_is_refused(imap, raw):
    imap.deliver(ALICE, b"From: a@example.org\r\nSubject: uu\r\nMIME-Version: 1.0\r\n"
                        b"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\nend\r\n")
    ok(raw, "SELECT INBOX")
    assert raw.cmd("FETCH 1 BINARY.PEEK[1]")[-1] == (
        b"t%d NO [UNKNOWN-CTE] Unknown Content-Transfer-Encoding x-uuencode\r\n" % raw.n)
    assert b"BODY[1] {" in b"".join(ok(raw, "FETCH 1 BODY.PEEK[1]"))  # BODY[] still works


def test_binary_append_is_stored_base64_and_fetched_decoded(imap, raw):
    """RFC 3516 4.3: a message APPENDed as literal8 with binary content is
    stored so that BODY[] has no NUL; BINARY[] gives the octets back."""
    payload = b"\x00\x01\x02binary\xff\r\n\x00"
    message = (b"From: user@domain.org\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
               b"Content-Transfer-Encoding: binary\r\n\r\n" + payload)
    lines = send_with_literals(raw, b"A1", [b"APPEND INBOX ~{%d}\r\n" % len(message), message])
    assert lines[-1].startswith(b"A1 OK [APPENDUID ")
    ok(raw, "SELECT INBOX")
    body = b"".join(ok(raw, "FETCH 1 BODY.PEEK[]"))
    assert b"\x00" not in body and b"Content-Transfer-Encoding: base64\r\n" in body
    line = b"".join(ok(raw, "FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1])"))
    assert b"BINARY.SIZE[1] %d " % len(payload) in line
    assert literal_of(line, b"BINARY[1]") == (b"~", payload)


def test_binary_syntax(imap, raw):
    imap.deliver(ALICE, MIXED)
    ok(raw, "SELECT INBOX")
    assert raw.cmd("FETCH 1 BINARY")[-1] == (
        b"t%d BAD Error in IMAP command FETCH: BINARY needs a section: BINARY[] or BINARY[1.2]\r\n" % raw.n)
    assert raw.cmd("FETCH 1 BINARY[HEADER]")[-1].startswith(b"t%d BAD " % raw.n)
    assert raw.cmd("FETCH 1 BINARY.SIZE[1]<0.5>")[-1].startswith(b"t%d BAD " % raw.n)
    assert ok(raw, "FETCH 1 BINARY.PEEK[9]") == [b"* 1 FETCH (BINARY[9] NIL)\r\n"]
