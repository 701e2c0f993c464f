"""LMTP delivery as the queue sees it: one reply per recipient, aliases
resolved, messages stored byte for byte with their trace headers."""
from __future__ import annotations

import poplib

from .delivery_support import ALICE, BOB, CAROL, DAVE, ERIN, PASSWORDS, lmtp_deliver

SIMPLE = b"From: bob@example.org\r\nTo: alice@example.com\r\nSubject: hello\r\n\r\nHi there.\r\n"


def sample_message() -> bytes:
    """MIME with 8-bit text, a base64 binary attachment, a raw binary part,
    lines starting with dots and a line far over 998 octets."""
    raw = bytes(b for b in range(256) if b not in (10, 13)) * 4
    import base64
    b64 = base64.encodebytes(bytes(range(256)) * 8).replace(b"\n", b"\r\n")
    return (
        b"From: =?utf-8?q?Ren=C3=A9?= <rene@example.org>\r\n"
        b"To: alice@example.com\r\n"
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
        b"Message-ID: <binary-1@example.org>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n"
        b"\r\n"
        b"--b1\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n"
        + "Grüße aus Köln — naïve café, ½ € ✓\r\n".encode("utf-8")
        + b".\r\n..two dots\r\n.three\r\n"
        + b"x" * 5000 + b"\r\n"
        b"--b1\r\n"
        b"Content-Type: application/octet-stream; name=blob.bin\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n" + b64 +
        b"--b1\r\n"
        b"Content-Type: application/octet-stream; name=raw.bin\r\n"
        b"Content-Transfer-Encoding: binary\r\n"
        b"\r\n" + raw + b"\r\n"
        b"--b1--\r\n"
    )


class TestPerRecipientReplies:
    def test_mixed_transaction_gets_one_reply_per_recipient(self, mailstore):
        dave_filler = b"Subject: filler\r\n\r\n" + b"y" * 2900 + b"\r\n"
        assert lmtp_deliver(mailstore.ports["lmtp"], "x@example.org", [DAVE], dave_filler).replies[DAVE][0] == 250
        result = lmtp_deliver(mailstore.ports["lmtp"], "bob@example.org",
                              [ALICE, "nobody@example.com", CAROL, DAVE, BOB], SIMPLE)
        assert result.refused_at_rcpt["nobody@example.com"][0] == 550
        assert result.refused_at_rcpt["nobody@example.com"][1].startswith(b"5.1.1")
        codes = {rcpt: (code, text.split()[0]) for rcpt, (code, text) in result.replies.items()}
        assert codes == {ALICE: (250, b"2.0.0"), CAROL: (550, b"5.2.1"), DAVE: (552, b"5.2.2"),
                         BOB: (250, b"2.0.0")}
        assert len(mailstore.inbox(ALICE)[1]) == 1
        assert len(mailstore.inbox(BOB)[1]) == 1
        assert len(mailstore.inbox(DAVE)[1]) == 1  # only the filler
        metrics = mailstore.ctx.metrics
        assert metrics.value("mailstore_deliveries_total", result="delivered") == 3
        assert metrics.value("mailstore_deliveries_total", result="rejected") == 3

    def test_over_quota_defers_when_configured(self, start_mailstore):
        mailstore = start_mailstore(over_quota="defer")
        big = b"Subject: big\r\n\r\n" + b"z" * 4000 + b"\r\n"
        result = lmtp_deliver(mailstore.ports["lmtp"], "x@example.org", [DAVE, ALICE], big)
        assert result.replies[DAVE] == (452, b"4.2.2 <dave@example.com>: message would exceed the mailbox quota, "
                                             b"try again later")
        assert result.replies[ALICE][0] == 250

    def test_quota_refusal_says_full_mailbox_or_too_big_message(self, mailstore):
        """Dave's quota is 3000 octets: at about 57%, a 2000-octet message
        would exceed it (smaller mail still gets in); once the quota is
        lowered below the usage, the mailbox is full."""
        filler = b"Subject: filler\r\n\r\n" + b"y" * 1600 + b"\r\n"
        assert lmtp_deliver(mailstore.ports["lmtp"], "x@example.org", [DAVE], filler).replies[DAVE][0] == 250
        big = b"Subject: big\r\n\r\n" + b"z" * 2000 + b"\r\n"
        result = lmtp_deliver(mailstore.ports["lmtp"], "x@example.org", [DAVE], big)
        assert result.replies[DAVE] == (552, b"5.2.2 <dave@example.com>: message would exceed the mailbox quota")
        assert lmtp_deliver(mailstore.ports["lmtp"], "x@example.org", [DAVE], SIMPLE).replies[DAVE][0] == 250

        # the same when the store refuses under its lock (the usage read before
        # was stale: another delivery took the room in between)
        from correo_server.mailstore.store import Usage
        real_usage = mailstore.store.usage

        async def stale_usage(address):
            return Usage((await real_usage(address)).messages, 0)

        mailstore.store.usage = stale_usage
        try:
            result = lmtp_deliver(mailstore.ports["lmtp"], "x@example.org", [DAVE], big)
        finally:
            del mailstore.store.usage
        assert result.replies[DAVE] == (552, b"5.2.2 <dave@example.com>: message would exceed the mailbox quota")

        from correo_server import directory as directorymod
        from .delivery_support import mailboxes
        import dataclasses
        entries = [dataclasses.replace(e, quota_bytes=1000) if e.address == DAVE else e for e in mailboxes()]
        (mailstore.config_dir / "directory.yaml").write_text(directorymod.dump(entries))
        mailstore.ctx.directory.force()
        result = lmtp_deliver(mailstore.ports["lmtp"], "x@example.org", [DAVE], SIMPLE)
        assert result.replies[DAVE] == (552, b"5.2.2 <dave@example.com>: mailbox is full")

    def test_low_free_space_defers_with_4_3_1(self, start_mailstore):
        mailstore = start_mailstore(min_free_bytes=1 << 62)  # more than any disk has
        result = lmtp_deliver(mailstore.ports["lmtp"], "x@example.org", [ALICE, BOB], SIMPLE)
        assert {r: (c, t.split()[0]) for r, (c, t) in result.replies.items()} == {
            ALICE: (452, b"4.3.1"), BOB: (452, b"4.3.1")}
        assert mailstore.inbox(ALICE)[1] == []

    def test_mailbox_suspended_after_rcpt_is_refused_after_data(self, mailstore, tmp_path):
        # the directory file changes between deliveries; no restart
        from correo_server import directory as directorymod
        from .delivery_support import mailboxes
        import dataclasses
        entries = [dataclasses.replace(e, suspended=True) if e.address == BOB else e for e in mailboxes()]
        (mailstore.config_dir / "directory.yaml").write_text(directorymod.dump(entries))
        mailstore.ctx.directory.force()
        result = lmtp_deliver(mailstore.ports["lmtp"], "x@example.org", [BOB], SIMPLE)
        assert result.replies[BOB][0] == 550

    def test_null_sender_and_pipelining_advertised(self, mailstore):
        import smtplib
        with smtplib.LMTP("127.0.0.1", mailstore.ports["lmtp"]) as client:
            code, text = client.ehlo()
            assert code == 250
            for ext in ("pipelining", "enhancedstatuscodes", "8bitmime", "size"):
                assert client.has_extn(ext), ext
            assert int(client.esmtp_features["size"]) == mailstore.config.mailstore.max_literal_bytes
            assert client.helo()[0] == 500  # HELO is not LMTP
        result = lmtp_deliver(mailstore.ports["lmtp"], "", [ALICE], SIMPLE)
        assert result.replies[ALICE][0] == 250
        uidvalidity, messages = mailstore.inbox(ALICE)
        assert mailstore.read(ALICE, messages[0].uid).startswith(b"Return-Path: <>\r\n")


class TestAddresses:
    def test_aliases_alias_domains_and_detail_reach_the_mailbox(self, mailstore):
        rcpts = ["postmaster@example.com", "ali@example.net", "Alice@EXAMPLE.NET", "alice+lists@example.com"]
        for rcpt in rcpts:
            result = lmtp_deliver(mailstore.ports["lmtp"], "x@example.org", [rcpt], SIMPLE)
            assert result.replies[rcpt][0] == 250, (rcpt, result)
        _, messages = mailstore.inbox(ALICE)
        assert len(messages) == 4
        delivered_to = [mailstore.read(ALICE, m.uid).split(b"\r\n")[1] for m in messages]
        assert delivered_to == [b"Delivered-To: " + r.encode() for r in rcpts]

    def test_address_and_its_alias_in_one_transaction_store_one_copy(self, mailstore):
        result = lmtp_deliver(mailstore.ports["lmtp"], "x@example.org", [ALICE, "postmaster@example.com"], SIMPLE)
        assert [c for c, _ in result.replies.values()] == [250, 250]
        assert len(mailstore.inbox(ALICE)[1]) == 1

    def test_forwarding_mailbox_without_keep_copy_still_stores_what_the_queue_sends(self, mailstore):
        result = lmtp_deliver(mailstore.ports["lmtp"], "x@example.org", [ERIN], SIMPLE)
        assert result.replies[ERIN][0] == 250
        assert len(mailstore.inbox(ERIN)[1]) == 1

    def test_other_domains_are_unknown(self, mailstore):
        result = lmtp_deliver(mailstore.ports["lmtp"], "x@example.org", ["alice@example.org", ALICE], SIMPLE)
        assert result.refused_at_rcpt["alice@example.org"][0] == 550
        assert result.replies[ALICE][0] == 250


class TestByteForByte:
    def test_binary_and_8bit_message_comes_back_identical_from_store_and_pop3(self, mailstore, monkeypatch):
        monkeypatch.setattr(poplib, "_MAXLINE", 1 << 20)  # poplib's own limit is 2048 octets a line
        message = sample_message()
        result = lmtp_deliver(mailstore.ports["lmtp"], "rene@example.org", [ALICE], message)
        assert result.replies[ALICE][0] == 250
        _, messages = mailstore.inbox(ALICE)
        stored = mailstore.read(ALICE, messages[0].uid)
        trace = b"Return-Path: <rene@example.org>\r\nDelivered-To: alice@example.com\r\n"
        assert stored == trace + message
        assert messages[0].size == len(stored)

        pop = poplib.POP3("127.0.0.1", mailstore.ports["pop3"], timeout=30)
        try:
            pop.user(ALICE)
            pop.pass_(PASSWORDS[ALICE])
            count, octets = pop.stat()
            assert (count, octets) == (1, len(stored))
            _, lines, size = pop.retr(1)
            assert b"\r\n".join(lines) + b"\r\n" == stored
        finally:
            pop.quit()

    def test_message_without_final_crlf_and_with_bare_lf_is_stored_as_received(self, mailstore):
        import socket
        with socket.create_connection(("127.0.0.1", mailstore.ports["lmtp"])) as sock:
            f = sock.makefile("rwb")
            f.readline()
            for line in (b"LHLO t\r\n", b"MAIL FROM:<x@example.org>\r\n", b"RCPT TO:<alice@example.com>\r\n",
                         b"DATA\r\n"):
                f.write(line)
                f.flush()
                reply = f.readline()
                while reply[3:4] == b"-":
                    reply = f.readline()
            assert reply.startswith(b"354")
            f.write(b"Subject: bare\r\n\r\nline one\nline two\r\n.\r\n")
            f.flush()
            assert f.readline().startswith(b"250 2.0.0")
        _, messages = mailstore.inbox(ALICE)
        assert mailstore.read(ALICE, messages[0].uid).endswith(b"\r\n\r\nline one\nline two\r\n")

    def test_too_big_is_refused_per_recipient_and_session_stays_usable(self, start_mailstore):
        mailstore = start_mailstore(max_literal_bytes=2000)
        import smtplib
        with smtplib.LMTP("127.0.0.1", mailstore.ports["lmtp"]) as client:
            client.ehlo()
            for body in ((b"a" * 98 + b"\r\n") * 30,  # too much data
                         b"a" * 3000 + b"\r\n"):  # one line longer than the limit
                client.mail("x@example.org")
                client.rcpt(ALICE)
                client.rcpt(BOB)
                code, text = client.data(b"Subject: big\r\n\r\n" + body)
                second = client.getreply()  # LMTP: one reply per recipient
                assert 500 <= code < 600 and second[0] == code, (code, text, second)
                assert text.startswith((b"5.3.4", b"5.5.2"))
            client.mail("x@example.org")
            client.rcpt(ALICE)
            assert client.data(SIMPLE)[0] == 250
        assert len(mailstore.inbox(ALICE)[1]) == 1
