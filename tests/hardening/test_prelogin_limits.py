"""Before login a client may send a few KB at a time, not megabytes: lines
and literals of IMAP, POP3, ManageSieve and SMTP AUTH are capped at 4 KB
(Dovecot's login processes keep as much), refused before they are read
where the protocol allows, and the session stays usable."""
from __future__ import annotations

import base64

import pytest

from correo_server.guard import PRELOGIN_INPUT_BYTES
from correo_server.relay.service import RelayService

from hardening_support import Raw, relay_config, write_directory


async def imap_client(ports) -> Raw:
    client = await Raw.connect(ports["imap"])
    assert (await client.line()).startswith(b"* OK")
    return client


class TestImap:
    async def test_a_login_literal_of_megabytes_is_refused_before_it_is_sent(self, mailstore):
        _, ports = mailstore
        client = await imap_client(ports)
        await client.send(b"a LOGIN {27262976}\r\n")
        reply = await client.line()
        assert reply == b"a NO [TOOBIG] Literal too large (the limit is 4096 octets).\r\n"  # no "+"
        await client.send(b'b LOGIN alice@example.com "alice-secret"\r\n')
        assert (await client.line()).startswith(b"b OK")
        client.close()

    async def test_a_non_synchronizing_literal_over_the_cap_ends_the_connection(self, mailstore):
        _, ports = mailstore
        client = await imap_client(ports)
        await client.send(b"a LOGIN {27262976+}\r\n" + b"x" * 10_000)
        assert (await client.line()).startswith(b"a BAD [TOOBIG]")
        assert (await client.line()).startswith(b"* BYE")
        assert await client.closed()

    async def test_a_login_literal_that_fits_is_read(self, mailstore):
        _, ports = mailstore
        client = await imap_client(ports)
        await client.send(b"a LOGIN {17}\r\n")
        assert await client.line() == b"+ OK\r\n"
        await client.send(b'alice@example.com "alice-secret"\r\n')
        assert (await client.line()).startswith(b"a OK")
        client.close()

    async def test_a_long_line_before_login_is_refused_and_after_login_accepted(self, mailstore):
        _, ports = mailstore
        client = await imap_client(ports)
        long_login = b'a LOGIN "' + b"x" * (PRELOGIN_INPUT_BYTES + 100) + b'" "secret"\r\n'
        await client.send(long_login)
        assert await client.line() == b"a BAD Command line too long.\r\n"
        # ID may be as long as RFC 2971 allows (30 values of 1024 octets), and no longer.
        fields = b" ".join(b'"f%02d" "%s"' % (i, b"v" * 1024) for i in range(30))
        await client.send(b"i ID (" + fields + b")\r\n")
        while not (line := await client.line()).startswith(b"i "):
            pass
        assert line.startswith(b"i OK")
        await client.send(b"j ID (" + fields + b' "f31" "' + b"v" * 2000 + b'")\r\n')
        assert await client.line() == b"j BAD Command line too long.\r\n"
        await client.send(b'b LOGIN alice@example.com "alice-secret"\r\n')
        assert (await client.line()).startswith(b"b OK")
        long_id = b'c ID ("name" "' + b"x" * (PRELOGIN_INPUT_BYTES + 100) + b'")\r\n'
        await client.send(long_id)
        while not (line := await client.line()).startswith(b"c "):
            pass
        assert line.startswith(b"c OK")
        await client.send(b"d APPEND INBOX {100000}\r\n")
        assert (await client.line()).startswith(b"+")
        await client.send(b"Subject: big\r\n\r\n" + b"y" * (100_000 - 16) + b"\r\n")
        assert (await client.line()).startswith(b"d OK")
        client.close()

    async def test_an_authenticate_answer_over_the_cap_is_refused(self, mailstore):
        _, ports = mailstore
        client = await imap_client(ports)
        await client.send(b"a AUTHENTICATE PLAIN\r\n")
        assert (await client.line()).startswith(b"+")
        await client.send(b"QUFB" * 5000 + b"\r\n")
        reply = await client.line()
        assert reply.startswith(b"a BAD") and b"too long" in reply.lower()
        await client.send(b"b NOOP\r\n")
        assert (await client.line()).startswith(b"b OK")
        client.close()


class TestPop3:
    async def test_a_long_line_is_refused_and_the_session_goes_on(self, mailstore):
        _, ports = mailstore
        client = await Raw.connect(ports["pop3"])
        await client.line()
        await client.send(b"USER " + b"a" * 100_000 + b"\r\n")
        assert (await client.line()).startswith(b"-ERR Line too long (limit 4096 octets)")
        await client.send(b"USER alice@example.com\r\n")
        assert (await client.line()).startswith(b"+OK")
        await client.send(b"PASS alice-secret\r\n")
        assert (await client.line()).startswith(b"+OK")
        client.close()


class TestManageSieve:
    async def greeted(self, ports) -> Raw:
        client = await Raw.connect(ports["managesieve"])
        while not (await client.line()).startswith(b"OK"):
            pass
        return client

    async def test_a_literal_over_the_cap_before_login_ends_the_connection(self, mailstore):
        _, ports = mailstore
        client = await self.greeted(ports)
        await client.send(b'AUTHENTICATE "PLAIN" {27262976+}\r\n' + b"x" * 10_000)
        assert (await client.line()).startswith(b'BYE "A literal of 27262976 octets is not acceptable before login."')
        assert await client.closed()

    async def test_a_literal_that_fits_logs_in(self, mailstore):
        _, ports = mailstore
        client = await self.greeted(ports)
        token = base64.b64encode(b"\0alice@example.com\0alice-secret")
        await client.send(b'AUTHENTICATE "PLAIN" {%d+}\r\n%s\r\n' % (len(token), token))
        assert (await client.line()).startswith(b"OK")
        client.close()

    async def test_a_long_line_is_refused(self, mailstore):
        _, ports = mailstore
        client = await self.greeted(ports)
        await client.send(b'AUTHENTICATE "PLAIN" "' + b"Q" * 100_000 + b'"\r\n')
        assert (await client.line()).startswith(b"NO")
        await client.send(b"NOOP\r\n")
        assert (await client.line()).startswith(b"OK")
        client.close()


class TestSmtpAuth:
    async def test_an_initial_response_of_100_kb_gets_one_reply(self, tmp_path):
        write_directory(tmp_path)
        service = RelayService(relay_config(tmp_path), str(tmp_path), handoff_timeout=5.0, grace=1.0)
        ports = await service.start()
        try:
            client = await Raw.connect(ports["submission"])
            await client.reply()
            await client.cmd("EHLO client.test")
            code, _ = await client.cmd("AUTH PLAIN " + "QUFB" * 25_000)
            assert code == 500
            assert (await client.cmd("NOOP"))[0] == 250
            assert await client.nothing_more() == b""
            client.close()
        finally:
            await service.stop()
