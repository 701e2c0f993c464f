"""Submission (587, STARTTLS then AUTH) and SMTPS (465, implicit TLS): who
may log in where, and as whom they may send."""
from __future__ import annotations

import base64
import smtplib

import pytest

from relay_helpers import PASSWORDS, RawClient, client_tls, in_thread, smtp_client

MESSAGE = b"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: hi\r\n\r\nhello\r\n"


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def test_no_login_without_tls_when_plaintext_is_never(make_relay):
    relay = await make_relay(auth={"plaintext": "never"})
    assert "smtps" not in relay.ports  # no TLS configured: the implicit-TLS port is skipped
    client = await RawClient.connect(relay.submission)
    code, lines = await client.cmd("EHLO client.example")
    assert not any("AUTH" in line for line in lines)
    code, lines = await client.cmd("AUTH PLAIN " + plain("alice@example.com", PASSWORDS["alice@example.com"]))
    assert (code, lines[-1][4:10]) == (538, "5.7.11")
    code, lines = await client.cmd("MAIL FROM:<alice@example.com>")
    assert (code, lines[-1][4:9]) == (530, "5.7.0")
    await client.close()
    assert relay.sink.messages == []


async def test_starttls_then_auth(make_relay):
    relay = await make_relay(tls=True, auth={"plaintext": "never"})

    def send():
        with smtplib.SMTP("127.0.0.1", relay.submission, local_hostname="client.test", timeout=10) as client:
            client.ehlo()
            assert client.has_extn("starttls") and not client.has_extn("auth")
            with pytest.raises(smtplib.SMTPNotSupportedError):
                client.login("alice@example.com", PASSWORDS["alice@example.com"])
            client.starttls(context=client_tls())
            client.ehlo()
            assert not client.has_extn("starttls") and "PLAIN" in client.esmtp_features["auth"]
            client.login("alice@example.com", PASSWORDS["alice@example.com"])
            return client.sendmail("alice@example.com", ["bob@example.com", "friend@foreign.example"], MESSAGE)

    assert await in_thread(send) == {}
    [message] = relay.sink.messages
    assert message.rcpt_tos == ["bob@example.com", "friend@foreign.example"]
    assert b"with ESMTPSA id" in message.content and b"(using TLSv1." in message.content


async def test_loopback_may_log_in_without_tls(make_relay):
    relay = await make_relay()  # auth.plaintext: loopback (the default); no TLS at all

    def send():
        with smtp_client(relay.submission) as client:
            client.login("alice@example.com", PASSWORDS["alice@example.com"])
            return client.sendmail("alice@example.com", ["friend@foreign.example"], MESSAGE)

    assert await in_thread(send) == {}
    assert b"with ESMTPA id" in relay.sink.messages[0].content


async def test_smtps_implicit_tls(make_relay):
    relay = await make_relay(tls=True, auth={"plaintext": "never"})

    def send():
        with smtplib.SMTP_SSL("127.0.0.1", relay.ports["smtps"], local_hostname="client.test", timeout=10,
                              context=client_tls()) as client:
            client.ehlo()
            assert not client.has_extn("starttls")
            client.user, client.password = "alice@example.com", PASSWORDS["alice@example.com"]
            code, _ = client.auth("LOGIN", client.auth_login, initial_response_ok=False)
            assert code == 235
            return client.sendmail("alice@example.com", ["friend@foreign.example"], MESSAGE)

    assert await in_thread(send) == {}
    assert b"with ESMTPSA id" in relay.sink.messages[0].content


async def test_mail_before_auth_refused(make_relay):
    relay = await make_relay()

    def send():
        with smtp_client(relay.submission) as client:
            client.sendmail("alice@example.com", ["bob@example.com"], MESSAGE)

    with pytest.raises(smtplib.SMTPSenderRefused) as info:
        await in_thread(send)
    assert info.value.smtp_code == 530 and info.value.smtp_error.startswith(b"5.7.0")
    assert relay.sink.messages == []


@pytest.mark.parametrize("sender", ["bob@example.com", "alice@foreign.example", "ceo@example.com",
                                    "alice+tag@example.com"])
async def test_sender_spoofing_refused(make_relay, sender):
    relay = await make_relay()

    def send():
        with smtp_client(relay.submission) as client:
            client.login("alice@example.com", PASSWORDS["alice@example.com"])
            client.sendmail(sender, ["friend@foreign.example"], MESSAGE)

    with pytest.raises(smtplib.SMTPSenderRefused) as info:
        await in_thread(send)
    assert info.value.smtp_code == 553 and info.value.smtp_error.startswith(b"5.7.1")
    assert relay.sink.messages == []


async def test_own_aliases_and_alias_domains_allowed(make_relay):
    relay = await make_relay()

    def send():
        with smtp_client(relay.submission) as client:
            client.login("al@example.com", PASSWORDS["alice@example.com"])  # log in by alias
            for sender in ("alice@example.com", "postmaster@example.com", "ALICE@example.net"):
                assert client.sendmail(sender, ["friend@foreign.example"], MESSAGE) == {}

    await in_thread(send)
    assert [m.mail_from for m in relay.sink.messages] == [
        "alice@example.com", "postmaster@example.com", "ALICE@example.net"]


@pytest.mark.parametrize("port", ["submission", "smtps"])
async def test_null_sender_refused_after_login(make_relay, port):
    """``MAIL FROM:<>`` is nobody's address: on submission it is refused like
    any address the mailbox does not own, and the session goes on."""
    relay = await make_relay(tls=True)
    client = await RawClient.connect(relay.ports[port], tls=port == "smtps")
    await client.cmd("EHLO client.example")
    code, _ = await client.cmd("AUTH PLAIN " + plain("alice@example.com", PASSWORDS["alice@example.com"]))
    assert code == 235
    code, lines = await client.cmd("MAIL FROM:<>")
    assert (code, lines[-1][4:9]) == (553, "5.7.1") and "<alice@example.com>" in lines[-1]
    assert (await client.cmd("MAIL FROM:<alice@example.com>"))[0] == 250
    await client.cmd("QUIT")
    await client.close()
    assert relay.sink.messages == []


async def test_null_sender_still_accepted_on_port_25(make_relay):
    relay = await make_relay()

    def send():
        with smtp_client(relay.smtp) as client:
            assert client.sendmail("", ["alice@example.com"], MESSAGE) == {}  # a bounce

    await in_thread(send)
    # (aiosmtpd's LMTP server, playing the queue, records the null sender as "<>")
    assert [m.mail_from for m in relay.sink.messages] == ["<>"]


async def test_wrong_password_suspended_mailbox_and_failure_limit(make_relay):
    relay = await make_relay(auth={"max_failures_per_session": 3})
    client = await RawClient.connect(relay.submission)
    await client.cmd("EHLO client.example")
    code, lines = await client.cmd("AUTH PLAIN " + plain("alice@example.com", "wrong"))
    assert (code, lines[-1][4:9]) == (535, "5.7.8")
    code, lines = await client.cmd("AUTH PLAIN " + plain("carol@example.com", PASSWORDS["carol@example.com"]))
    assert (code, lines[-1][4:9]) == (535, "5.7.8") and "suspended" in lines[-1]
    code, lines = await client.cmd("AUTH PLAIN " + plain("nobody@example.com", "x"))
    assert code == 535
    code, lines = await client.reply()
    assert (code, lines[-1][4:9]) == (421, "4.7.0")
    assert await client.closed()
    await client.close()
    metrics = relay.service.context.metrics
    assert metrics.value("relay_auth_total", result="invalid") == 2
    assert metrics.value("relay_auth_total", result="suspended") == 1


async def test_sasl_exchanges(make_relay):
    """PLAIN with and without an initial response, LOGIN step by step, and '*' to abort."""
    relay = await make_relay()
    client = await RawClient.connect(relay.submission)
    await client.cmd("EHLO client.example")
    assert (await client.cmd("AUTH CRAM-MD5"))[0] == 504
    assert (await client.cmd("AUTH PLAIN"))[0] == 334
    code, lines = await client.cmd("*")
    assert code == 501
    assert (await client.cmd("AUTH PLAIN not-base64!"))[0] == 501
    code, lines = await client.cmd("AUTH LOGIN")
    assert (code, base64.b64decode(lines[0][4:])) == (334, b"Username:")
    code, lines = await client.cmd(b64("bob@example.com"))
    assert (code, base64.b64decode(lines[0][4:])) == (334, b"Password:")
    code, lines = await client.cmd(b64(PASSWORDS["bob@example.com"]))
    assert (code, lines[-1][4:9]) == (235, "2.7.0")
    assert (await client.cmd("AUTH PLAIN"))[0] == 503  # already authenticated
    assert (await client.cmd("MAIL FROM:<bob@example.com>"))[0] == 250
    await client.close()


async def test_utf8_mailbox_logs_in_and_sends(make_relay):
    relay = await make_relay()
    client = await RawClient.connect(relay.submission)
    await client.cmd("EHLO client.example")
    code, _ = await client.cmd("AUTH PLAIN " + plain("δοκιμή@example.com", PASSWORDS["δοκιμή@example.com"]))
    assert code == 235
    code, lines = await client.cmd("MAIL FROM:<δοκιμή@example.com>")
    assert (code, lines[-1][4:9]) == (553, "5.6.7")  # non-ASCII needs SMTPUTF8
    assert (await client.cmd("MAIL FROM:<δοκιμή@example.com> SMTPUTF8"))[0] == 250
    assert (await client.cmd("RCPT TO:<friend@foreign.example>"))[0] == 250
    assert (await client.cmd("DATA"))[0] == 354
    code, _ = await client.cmd("From: δοκιμή@example.com\r\nSubject: γεια\r\n\r\nκείμενο\r\n.".encode())
    assert code == 250
    await client.close()
    [message] = relay.sink.messages
    assert message.mail_from == "δοκιμή@example.com" and "SMTPUTF8" in message.mail_options
    assert b"with UTF8SMTPA id" in message.content


async def test_tls_session_forgets_what_was_said_before_starttls(make_relay):
    relay = await make_relay(tls=True)
    client = await RawClient.connect(relay.submission)
    await client.cmd("EHLO client.example")
    code, _ = await client.cmd("AUTH PLAIN " + plain("alice@example.com", PASSWORDS["alice@example.com"]))
    assert code == 235  # loopback may log in in the clear
    assert (await client.cmd("STARTTLS"))[0] == 220
    await client.writer.start_tls(client_tls())
    code, lines = await client.cmd("MAIL FROM:<alice@example.com>")
    assert code == 503  # EHLO again first (RFC 3207 4.2)
    await client.cmd("EHLO client.example")
    code, lines = await client.cmd("MAIL FROM:<alice@example.com>")
    assert code == 530  # and log in again
    assert (await client.cmd("STARTTLS"))[0] == 503
    await client.close()


async def test_commands_pipelined_behind_starttls_are_discarded(make_relay):
    """CVE-2011-0411-style injection: plaintext sent after STARTTLS, before the
    handshake, must not be executed inside the TLS session."""
    relay = await make_relay(tls=True)
    client = await RawClient.connect(relay.submission)
    await client.cmd("EHLO client.example")
    await client.send(b"STARTTLS\r\nHELP\r\n")
    assert (await client.reply())[0] == 220
    await client.writer.start_tls(client_tls())
    code, lines = await client.cmd("NOOP")
    assert lines == ["250 2.0.0 OK"]  # the reply to NOOP, not to the injected HELP
    await client.close()
