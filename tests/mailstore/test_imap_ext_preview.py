"""PREVIEW (RFC 8970): the first words of a message for a message list —
the RFC's three answers (a text, ``""`` for a message with no text, LAZY),
what is left out (quotes, signature, HTML tags and styles, attachments),
the 256-character bound, UTF-8 as a literal, and imapclient fetching it."""
from __future__ import annotations

import imapclient

from ext_messages import ok
from imaptest_support import ALICE, PASSWORD

LOREM = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. Curabitur aliquam turpis et ante dictum, "
         "et pulvinar dui congue. Maecenas hendrerit, lorem in porta finibus, tellus nisi pharetra nunc, "
         "eget pretium elit est sit amet velit. Nullam vitae ligula nullam aliquet fermentum ipsum.")
CUT = LOREM.index(" Curabitur")
PLAIN = ("Subject: lorem\r\n\r\n" + LOREM[:CUT] + "\r\n" + LOREM[CUT + 1:] + "\r\n\r\n> an older message, quoted\r\n"
         "-- \r\nJane, a signature\r\n").encode()
ATTACHMENT_ONLY = b"Subject: scan\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n"
HTML = ("Subject: news\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n"
        "--b\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        "<html><head><style>p {color: red}</style></head><body><p>Caf=C3=A9 &amp; cr=C3=A8me</p>"
        "<script>x()</script><p>br=C3=BBl=C3=A9e</p></body></html>\r\n--b--\r\n").encode()
ATTACHED_TEXT_FIRST = (b"Subject: log\r\nContent-Type: multipart/mixed; boundary=m\r\n\r\n--m\r\n"
                       b"Content-Type: text/plain\r\nContent-Disposition: attachment; filename=log.txt\r\n\r\n"
                       b"ERROR ERROR\r\n--m\r\nContent-Type: text/plain\r\n\r\nThe log is attached.\r\n--m--\r\n")


def test_the_rfc8970_examples(imap, raw):
    imap.deliver(ALICE, PLAIN)
    imap.deliver(ALICE, ATTACHMENT_ONLY)
    assert b" PREVIEW" in ok(raw, "CAPABILITY")[0]
    ok(raw, "SELECT INBOX")
    first = ok(raw, "FETCH 1 (PREVIEW)")[0]
    expected = LOREM[:256].encode()
    assert first == b'* 1 FETCH (PREVIEW "' + expected + b'")\r\n'
    assert len(expected.decode()) == 256  # the RFC's bound, in characters
    assert ok(raw, "FETCH 2 (PREVIEW)") == [b'* 2 FETCH (PREVIEW "")\r\n']
    assert ok(raw, "FETCH 1 (PREVIEW (LAZY))") == [first]  # made when asked: LAZY gets it too
    assert raw.cmd("FETCH 1 (PREVIEW (EAGER))")[-1].startswith(b"t%d BAD " % raw.n)


def test_what_a_preview_leaves_out(imap, raw):
    imap.deliver(ALICE, b"Subject: short\r\n\r\nSee you at 3.\r\n\r\n> When?\r\n> Tomorrow?\r\n-- \r\nBob\r\n")
    imap.deliver(ALICE, HTML)
    imap.deliver(ALICE, ATTACHED_TEXT_FIRST)
    ok(raw, "SELECT INBOX")
    lines = ok(raw, "FETCH 1:3 PREVIEW")
    assert lines[0] == b'* 1 FETCH (PREVIEW "See you at 3.")\r\n'
    text = "Café & crème brûlée".encode()
    assert lines[1] == b"* 2 FETCH (PREVIEW {%d}\r\n%s)\r\n" % (len(text), text)  # 8-bit: a literal
    assert lines[2] == b'* 3 FETCH (PREVIEW "The log is attached.")\r\n'


def test_imapclient_fetches_previews_kept_in_the_index(imap):
    imap.deliver(ALICE, PLAIN)
    imap.deliver(ALICE, HTML)
    c = imapclient.IMAPClient("127.0.0.1", port=imap.port, ssl=False, timeout=30)
    c.login(ALICE, PASSWORD)
    assert b"PREVIEW" in c.capabilities()
    c.select_folder("INBOX")
    got = c.fetch([1, 2], ["PREVIEW", "UID"])
    assert got[1][b"PREVIEW"] == LOREM[:256].encode()
    assert got[2][b"PREVIEW"].decode() == "Café & crème brûlée"
    assert not any(b"\\Seen" in f for f in c.get_flags([1, 2]).values())  # a preview is not reading
    kept = imap.call(imap.folder(ALICE).message_data_for("preview", [1, 2]))
    assert kept == {1: LOREM[:256].encode(), 2: "Café & crème brûlée".encode()}
    c.logout()
