"""Known messages for the IMAP tests, with the parts they are built from so
that expected sizes and structures are computed independently of the server."""
from __future__ import annotations

import base64

CRLF = b"\r\n"


def lines(*parts: bytes) -> bytes:
    return CRLF.join(parts)


SIMPLE_BODY = "Bonjour, crème brûlée ce soir ?\r\nLine two\r\n".encode("utf-8")
SIMPLE_HEADER = lines(
    b'From: "Bob Example" <bob@example.org>',
    b"To: Alice <alice@example.com>, carol@example.com",
    b"Cc: undisclosed-recipients:;",
    b"Subject: =?utf-8?q?Caf=C3=A9_menu?=",
    b"Date: Tue, 14 May 2024 10:00:00 +0200",
    b"Message-ID: <simple@example.org>",
    b"In-Reply-To: <prev@example.org>",
    b"X-Folded: first",
    b"  second",
    b"Content-Type: text/plain; charset=utf-8",
    b"Content-Transfer-Encoding: 8bit",
    b"", b"")
SIMPLE = SIMPLE_HEADER + SIMPLE_BODY

SIMPLE_ENVELOPE = (
    b'("Tue, 14 May 2024 10:00:00 +0200" "=?utf-8?q?Caf=C3=A9_menu?=" '
    b'(("Bob Example" NIL "bob" "example.org")) (("Bob Example" NIL "bob" "example.org")) '
    b'(("Bob Example" NIL "bob" "example.org")) '
    b'(("Alice" NIL "alice" "example.com")(NIL NIL "carol" "example.com")) '
    b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) NIL '
    b'"<prev@example.org>" "<simple@example.org>")')
SIMPLE_BODYSTRUCTURE = (
    b'("text" "plain" ("charset" "utf-8") NIL NIL "8bit" %d 2 NIL NIL NIL NIL)' % len(SIMPLE_BODY))

# A binary attachment (every octet value) and 8-bit text, the way a mail
# client sends them: multipart/mixed with an alternative and a forwarded message.
ATTACHMENT = bytes(range(256)) * 3
ATTACHMENT_B64 = CRLF.join(base64.encodebytes(ATTACHMENT).splitlines())
PLAIN_QP = b"Caf=E9 report attached.=\r\nSecond line."
HTML = "<p>Café report</p>".encode("utf-8")
INNER_MSG_BODY = b"inner body"
INNER_MSG = lines(b"From: carol@example.com", b"Subject: inner", b"Date: Thu, 16 May 2024 08:00:00 +0000",
                  b"", INNER_MSG_BODY)
MIXED = lines(
    b"From: Bob <bob@example.org>",
    b"To: alice@example.com",
    b"Subject: Report",
    b"Date: Wed, 15 May 2024 09:30:00 +0000",
    b"Message-ID: <mixed@example.org>",
    b"MIME-Version: 1.0",
    b'Content-Type: multipart/mixed; boundary="outer"',
    b"",
    b"This is a multi-part message in MIME format.",
    b"--outer",
    b"Content-Type: multipart/alternative; boundary=inner",
    b"",
    b"--inner",
    b"Content-Type: text/plain; charset=iso-8859-1",
    b"Content-Transfer-Encoding: quoted-printable",
    b"",
    PLAIN_QP,
    b"--inner",
    b"Content-Type: text/html; charset=utf-8",
    b"Content-Transfer-Encoding: 8bit",
    b"",
    HTML,
    b"--inner--",
    b"--outer",
    b'Content-Type: application/octet-stream; name="data.bin"',
    b'Content-Disposition: attachment; filename="data.bin"',
    b"Content-Transfer-Encoding: base64",
    b"",
    ATTACHMENT_B64,
    b"--outer",
    b"Content-Type: message/rfc822",
    b"Content-Description: forwarded",
    b"",
    INNER_MSG,
    b"--outer--",
    b"epilogue",
    b"")

INNER_ENVELOPE = (b'("Thu, 16 May 2024 08:00:00 +0000" "inner" ((NIL NIL "carol" "example.com")) '
                  b'((NIL NIL "carol" "example.com")) ((NIL NIL "carol" "example.com")) NIL NIL NIL NIL NIL)')


def mixed_bodystructure(extended: bool = True) -> bytes:
    ext = (lambda s: s) if extended else (lambda s: b"")
    plain = (b'("text" "plain" ("charset" "iso-8859-1") NIL NIL "quoted-printable" %d 2'
             % len(PLAIN_QP) + ext(b" NIL NIL NIL NIL") + b")")
    html = b'("text" "html" ("charset" "utf-8") NIL NIL "8bit" %d 1' % len(HTML) + ext(b" NIL NIL NIL NIL") + b")"
    alternative = b"(" + plain + html + b' "alternative"' + ext(b' ("boundary" "inner") NIL NIL NIL') + b")"
    attachment = (b'("application" "octet-stream" ("name" "data.bin") NIL NIL "base64" %d' % len(ATTACHMENT_B64)
                  + ext(b' NIL ("attachment" ("filename" "data.bin")) NIL NIL') + b")")
    inner_text = (b'("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" %d 1' % len(INNER_MSG_BODY)
                  + ext(b" NIL NIL NIL NIL") + b")")
    # INNER_MSG has no final line break: lines = line breaks + 1
    forwarded = (b'("message" "rfc822" NIL NIL "forwarded" "7BIT" %d ' % len(INNER_MSG) + INNER_ENVELOPE + b" "
                 + inner_text + b" %d" % (INNER_MSG.count(b"\n") + 1) + ext(b" NIL NIL NIL NIL") + b")")
    return (b"(" + alternative + attachment + forwarded + b' "mixed"'
            + ext(b' ("boundary" "outer") NIL NIL NIL') + b")")
