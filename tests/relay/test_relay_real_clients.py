"""Real clients against a real relay: Python's ``smtplib``, ``aiosmtplib``,
and Debian's ``swaks`` (STARTTLS + AUTH, implicit TLS, pipelining), with a
self-signed certificate."""
from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage

import aiosmtplib
import pytest

from host_tools import needs_swaks_tls
from relay_helpers import PASSWORDS, client_tls, in_thread


def message(sender: str, rcpt: str, subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, rcpt, subject
    msg.set_content("Hello from a real client.\n")
    return msg


async def test_smtplib_inbound_and_submission(make_relay):
    relay = await make_relay(tls=True, auth={"plaintext": "never"})

    def run():
        with smtplib.SMTP("127.0.0.1", relay.smtp, local_hostname="client.test", timeout=10) as client:
            client.starttls(context=client_tls())
            client.send_message(message("someone@foreign.example", "alice@example.com", "inbound"))
        with smtplib.SMTP("127.0.0.1", relay.submission, local_hostname="client.test", timeout=10) as client:
            client.starttls(context=client_tls())
            client.login("bob@example.com", PASSWORDS["bob@example.com"])
            client.send_message(message("bob@example.com", "friend@foreign.example", "outbound"))

    await in_thread(run)
    assert [m.rcpt_tos for m in relay.sink.messages] == [["alice@example.com"], ["friend@foreign.example"]]
    assert b"with ESMTPS id" in relay.sink.messages[0].content


async def test_aiosmtplib_starttls_and_implicit_tls(make_relay):
    relay = await make_relay(tls=True, auth={"plaintext": "never"})
    await aiosmtplib.send(message("alice@example.com", "friend@foreign.example", "starttls"),
                          hostname="127.0.0.1", port=relay.submission, start_tls=True, validate_certs=False,
                          username="alice@example.com", password=PASSWORDS["alice@example.com"], timeout=10)
    await aiosmtplib.send(message("alice@example.com", "friend@foreign.example", "implicit"),
                          hostname="127.0.0.1", port=relay.ports["smtps"], use_tls=True, validate_certs=False,
                          username="alice@example.com", password=PASSWORDS["alice@example.com"], timeout=10)
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as info:
        await aiosmtplib.send(message("bob@example.com", "friend@foreign.example", "spoof"),
                              hostname="127.0.0.1", port=relay.submission, start_tls=True, validate_certs=False,
                              username="alice@example.com", password=PASSWORDS["alice@example.com"], timeout=10)
    assert info.value.code == 553
    assert len(relay.sink.messages) == 2
    assert all(b"with ESMTPSA id" in m.content for m in relay.sink.messages)




async def swaks(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "swaks", "--server", "127.0.0.1", "--ehlo", "client.test", "--timeout", "10", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode, out.decode("utf-8", "replace")


@needs_swaks_tls
async def test_swaks_starttls_auth(make_relay):
    relay = await make_relay(tls=True, auth={"plaintext": "never"})
    code, out = await swaks("--port", str(relay.submission), "--tls", "--auth", "PLAIN",
                            "--auth-user", "alice@example.com", "--auth-password", PASSWORDS["alice@example.com"],
                            "--from", "alice@example.com", "--to", "friend@foreign.example",
                            "--header", "Subject: swaks starttls")
    assert code == 0, out
    assert "250 2.0.0 Ok: queued as" in out
    code, out = await swaks("--port", str(relay.submission), "--tls", "--auth", "LOGIN",
                            "--auth-user", "alice@example.com", "--auth-password", "wrong",
                            "--from", "alice@example.com", "--to", "friend@foreign.example")
    assert code != 0 and "535 5.7.8" in out
    assert [m.rcpt_tos for m in relay.sink.messages] == [["friend@foreign.example"]]
    assert b"Subject: swaks starttls" in relay.sink.messages[0].content


@needs_swaks_tls
async def test_swaks_implicit_tls_and_pipelining(make_relay):
    relay = await make_relay(tls=True, auth={"plaintext": "never"})
    code, out = await swaks("--port", str(relay.ports["smtps"]), "--tls-on-connect", "--auth", "LOGIN",
                            "--auth-user", "bob@example.com", "--auth-password", PASSWORDS["bob@example.com"],
                            "--from", "bob@example.com", "--to", "friend@foreign.example")
    assert code == 0, out
    code, out = await swaks("--port", str(relay.smtp), "--pipeline", "--from", "someone@foreign.example",
                            "--to", "alice@example.com,bob@example.com")
    assert code == 0, out
    code, out = await swaks("--port", str(relay.smtp), "--from", "someone@foreign.example",
                            "--to", "victim@foreign.example")
    assert code != 0 and "554 5.7.1" in out
    assert [m.rcpt_tos for m in relay.sink.messages] == [["friend@foreign.example"],
                                                          ["alice@example.com", "bob@example.com"]]
