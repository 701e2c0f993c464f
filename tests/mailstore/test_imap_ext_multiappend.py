"""MULTIAPPEND (RFC 3502): several messages in one APPEND, each with its
flags and date, stored all or none."""
from __future__ import annotations

from ext_messages import ok, send_with_literals
from imaptest_support import ServerThread, make_config, make_directory

MSG1 = (b"Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\nFrom: Fred Foobar <foobar@Blurdybloop.example.COM>\r\n"
        b"Subject: afternoon meeting\r\nTo: mooch@owatagu.example.net\r\n"
        b"Message-Id: <B27397-0100000@Blurdybloop.example.COM>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\nHello Joe, do you think we can meet at 3:30 tomorrow?\r\n")
MSG2 = (b"Date: Mon, 7 Feb 1994 22:43:04 -0800 (PST)\r\nFrom: Joe Mooch <mooch@OWaTaGu.example.net>\r\n"
        b"Subject: Re: afternoon meeting\r\nTo: foobar@blurdybloop.example.com\r\n"
        b"Message-Id: <a0434793874930@OWaTaGu.example.net>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\n3:30 is fine with me.\r\n")


def multiappend(raw, mailbox: str, tag: bytes = b"A003") -> list[bytes]:
    return send_with_literals(raw, tag, [
        b"APPEND %s (\\Seen) {%d}\r\n" % (mailbox.encode(), len(MSG1)), MSG1,
        b' (\\Seen $Meeting) " 7-Feb-1994 22:43:04 -0800" {%d}\r\n' % len(MSG2), MSG2])


def test_the_rfc3502_example(imap, raw):
    assert b" MULTIAPPEND" in ok(raw, "CAPABILITY")[0]
    ok(raw, "CREATE saved-messages")
    validity = int(ok(raw, "STATUS saved-messages (UIDVALIDITY)")[0].split()[-1].rstrip(b")\r\n"))
    assert multiappend(raw, "saved-messages") == [
        b"A003 OK [APPENDUID %d 1:2] Append completed.\r\n" % validity]
    ok(raw, "EXAMINE saved-messages")
    lines = ok(raw, "FETCH 1:2 (FLAGS INTERNALDATE RFC822.SIZE)")
    assert lines[0].startswith(b"* 1 FETCH (FLAGS (\\Seen \\Recent) INTERNALDATE ")
    assert lines[0].endswith(b"RFC822.SIZE 329)\r\n")  # as in the RFC
    assert lines[1] == (b'* 2 FETCH (FLAGS (\\Seen \\Recent $Meeting) INTERNALDATE " 7-Feb-1994 22:43:04 -0800" '
                        b"RFC822.SIZE %d)\r\n" % len(MSG2))
    assert ok(raw, "FETCH 2 BODY.PEEK[]")[0].endswith(MSG2 + b")\r\n")


def test_a_missing_mailbox_stores_nothing(imap, raw):
    assert multiappend(raw, "bogusname", b"A004")[-1] == b"A004 NO [TRYCREATE] Mailbox doesn't exist\r\n"


def test_over_quota_stores_none_of_them(tmp_path):
    """The quota is checked for all the messages together: one over it
    and none is stored."""
    cfg = make_config(tmp_path)
    server = ServerThread(cfg, make_directory(cfg, quota=len(MSG1) + len(MSG2) - 1))
    try:
        from imaptest_support import RawClient
        raw = RawClient(server.port)
        raw.login()
        assert multiappend(raw, "INBOX")[-1].startswith(b"A003 NO [OVERQUOTA]")
        assert ok(raw, "STATUS INBOX (MESSAGES)") == [b'* STATUS "INBOX" (MESSAGES 0)\r\n']
        assert send_with_literals(raw, b"A5", [b"APPEND INBOX {%d}\r\n" % len(MSG1), MSG1])[-1].startswith(b"A5 OK")
        raw.close()
    finally:
        server.stop()


def test_a_bad_second_message_stores_nothing(imap, raw):
    lines = send_with_literals(raw, b"A6", [b"APPEND INBOX {%d}\r\n" % len(MSG1), MSG1, b" (\\Bogus) {3}\r\n", b"abc"])
    assert lines[-1] == b"A6 BAD Invalid system flag \\Bogus\r\n"
    lines = send_with_literals(raw, b"A7", [b"APPEND INBOX {%d}\r\n" % len(MSG1), MSG1, b" {0}\r\n", b""])
    assert lines[-1] == b"A7 NO Can't save a zero byte message.\r\n"
    assert ok(raw, "STATUS INBOX (MESSAGES)") == [b'* STATUS "INBOX" (MESSAGES 0)\r\n']
