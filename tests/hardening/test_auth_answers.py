"""Logins under abuse: one reply per command whatever the client sends, a
short delay after failures that says so, and no tracebacks a client can
cause."""
from __future__ import annotations

import base64

import pytest

from correo_server.relay.service import RelayService

from hardening_support import Raw, relay_config, write_directory


@pytest.fixture
async def relay(tmp_path):
    write_directory(tmp_path)
    service = RelayService(relay_config(tmp_path), str(tmp_path), handoff_timeout=5.0, grace=1.0)
    ports = await service.start()
    yield ports
    await service.stop()


class TestSmtpAuthAnswerTooLong:
    async def test_a_megabyte_answer_gets_exactly_one_reply_and_the_session_stays_in_step(self, relay):
        client = await Raw.connect(relay["submission"])
        assert (await client.reply())[0] == 220
        assert (await client.cmd("EHLO client.test"))[0] == 250
        assert (await client.cmd("AUTH PLAIN"))[0] == 334
        answer = base64.b64encode(b"x" * 750_000)  # ~1 MB of base64 on one line
        await client.send(answer + b"\r\n")
        code, text = await client.reply()
        assert code == 501 and "too long" in text[0]
        # The next command's reply is the next thing said: nothing else was queued up.
        assert await client.cmd("NOOP") == (250, ["2.0.0 OK"])
        assert await client.nothing_more() == b""
        client.close()

    async def test_an_answer_sent_in_pieces_gets_one_reply_too(self, relay):
        client = await Raw.connect(relay["submission"])
        await client.reply()
        await client.cmd("EHLO client.test")
        assert (await client.cmd("AUTH LOGIN"))[0] == 334
        for _ in range(40):
            await client.send(b"QUFB" * 1000)
        await client.send(b"\r\n")
        assert (await client.reply())[0] == 501
        assert (await client.cmd("NOOP"))[0] == 250
        assert await client.nothing_more() == b""
        client.close()


class TestFailedTlsHandshake:
    async def test_imap_starttls_with_a_client_that_cannot_do_tls_is_an_info_line_not_a_traceback(self, mailstore):
        from structlog.testing import capture_logs

        _service, ports = mailstore
        client = await Raw.connect(ports["imap"])
        assert b"STARTTLS" in await client.line()
        with capture_logs() as logs:
            await client.send(b"a STARTTLS\r\n")
            assert (await client.line()).startswith(b"a OK")
            await client.send(b"\x16\x03\x01\x00\x05hello, this is no TLS handshake\r\n" * 4)
            assert await client.closed()
        events = {e["event"]: e for e in logs}
        assert "imap_tls_failed" in events and events["imap_tls_failed"]["log_level"] == "info"
        assert not [e for e in logs if e["log_level"] in ("error", "critical", "exception")]
        client.close()


class TestFailedLoginDelay:
    """A wrong password costs a short delay (2 s at most, like Dovecot's
    auth_failure_delay), and once failures repeat the reply says to wait."""

    def test_the_delay_doubles_up_to_two_seconds_and_a_success_clears_it(self):
        from correo_server.config import AuthSettings
        from correo_server.guard import LoginThrottle

        now = [0.0]
        throttle = LoginThrottle.from_settings(AuthSettings(), clock=lambda: now[0])
        delays = [throttle.failed("192.0.2.1") for _ in range(8)]
        assert delays == [1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]
        assert throttle.retry_after("192.0.2.1") == 2.0
        assert throttle.retry_after("192.0.2.2") == 0.0
        throttle.succeeded("192.0.2.1")
        assert throttle.failed("192.0.2.1") == 1.0 and throttle.retry_after("192.0.2.1") == 0.0

    async def test_smtp_says_to_wait_after_repeated_failures(self, tmp_path):
        write_directory(tmp_path)
        config = relay_config(tmp_path, auth={"failure_delay_seconds": 0.05, "failure_delay_max_seconds": 0.1,
                                              "max_failures_per_session": 10})
        service = RelayService(config, str(tmp_path), handoff_timeout=5.0, grace=1.0)
        ports = await service.start()
        try:
            client = await Raw.connect(ports["submission"])
            await client.reply()
            await client.cmd("EHLO client.test")
            token = base64.b64encode(b"\0alice@example.com\0wrong").decode()
            replies = [await client.cmd(f"AUTH PLAIN {token}") for _ in range(4)]
            assert [code for code, _ in replies] == [535] * 4
            assert replies[0][1] == ["5.7.8 Authentication credentials invalid"]
            assert "wait 1 second before trying again" in replies[3][1][0]
            client.close()
        finally:
            await service.stop()

    async def test_imap_pop3_and_managesieve_say_to_wait_too(self, mailstore):
        service, ports = mailstore
        service.ctx.throttle.base, service.ctx.throttle.maximum = 0.01, 0.02
        for _ in range(3):
            service.ctx.throttle.failed("127.0.0.1")
        imap = await Raw.connect(ports["imap"])
        await imap.line()
        await imap.send(b'a LOGIN alice@example.com "wrong"\r\n')
        reply = await imap.line()
        assert reply.startswith(b"a NO [AUTHENTICATIONFAILED] Authentication failed. Too many failures") \
            and b"wait 1 second before trying again." in reply
        pop = await Raw.connect(ports["pop3"])
        await pop.line()
        await pop.send(b"USER alice@example.com\r\n")
        await pop.line()
        await pop.send(b"PASS wrong\r\n")
        assert (await pop.line()).startswith(b"-ERR [AUTH] Authentication failed. Too many failures")
        sieve = await Raw.connect(ports["managesieve"])
        while not (await sieve.line()).startswith(b"OK"):
            pass
        token = base64.b64encode(b"\0alice@example.com\0wrong")
        await sieve.send(b'AUTHENTICATE "PLAIN" "' + token + b'"\r\n')
        assert (await sieve.line()).startswith(b'NO "Authentication failed. Too many failures')
        for c in (imap, pop, sieve):
            c.close()
