"""SRS for forwards, with the three real services: mail a mailbox forwards to
another domain leaves with an SRS sender at our domain (so that SPF passes
there), a bounce to that address comes back through the relay to the real
sender, and a forged or tampered SRS address is refused at RCPT."""
from __future__ import annotations

import smtplib
import sys
from pathlib import Path

import pytest
from defences_support import message
from stack_support import PASSWORD, default_mailboxes, entry, start_stack

sys.path.insert(0, str(Path(__file__).parent.parent / "relay"))
from relay_helpers import in_thread  # noqa: E402

from correo_server.srs import Srs, load_keys  # noqa: E402


def send(port: int, sender: str, rcpt: str, msg: bytes, *, login: str | None = None, helo: str = "client.good.example"):
    """The refusal (code, text) or None."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname=helo, timeout=30) as client:
        if login:
            client.login(login, PASSWORD)
        try:
            client.sendmail(sender, [rcpt], msg)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = exc.recipients[rcpt]
            return code, text.decode()
    return None


@pytest.fixture
async def stack(tmp_path, zone):
    zone.txt("good.example", "v=spf1 ip4:127.0.0.0/8 -all")
    s = await start_stack(tmp_path, zone.port)
    yield s
    await s.stop()


async def test_a_forward_leaves_with_an_srs_sender_and_its_bounce_finds_the_real_sender(zone, stack):
    far = await stack.add_mx(zone, "far.test", "127.0.0.2")
    home = await stack.add_mx(zone, "good.example", "127.0.0.3")
    assert await in_thread(send, stack.smtp, "someone@good.example", "carol@example.com",
                           message("someone@good.example", to="carol@example.com")) is None
    await stack.until(lambda: far.messages, what="the forward at far.test")
    [(srs_sender, rcpts, data)] = far.messages
    assert rcpts == ["dave@far.test"] and b"Hello Bob." in data
    assert srs_sender.startswith("SRS0=") and srs_sender.endswith("@example.com")
    keys = load_keys(stack.root / "config" / "srs" / "example.com.keys")
    assert Srs(keys, "example.com").reverse(srs_sender) == "someone@good.example"

    # far.test cannot deliver after all and sends a bounce to the address it was given.
    bounce = (b"From: MAILER-DAEMON@far.test\r\nTo: " + srs_sender.encode() + b"\r\nSubject: Undelivered Mail\r\n"
              b"\r\ndave@far.test: mailbox gone\r\n")
    assert await in_thread(send, stack.smtp, "", srs_sender, bounce, helo="mx.far.test") is None
    await stack.until(lambda: home.messages, what="the bounce at the real sender's server")
    [(sender, rcpts, data)] = home.messages
    assert sender in ("", "<>") and rcpts == ["someone@good.example"] and b"mailbox gone" in data


async def test_a_forged_or_tampered_srs_address_is_refused_at_rcpt(zone, stack):
    keys = load_keys(stack.root / "config" / "srs" / "example.com.keys")
    genuine = Srs(keys, "example.com").forward("someone@good.example")
    tampered = genuine.replace("good.example", "evil.example")
    refused = await in_thread(send, stack.smtp, "", tampered, b"Subject: x\r\n\r\nbounce\r\n", helo="mx.evil.example")
    assert refused is not None and refused[0] == 550 and refused[1].startswith("5.1.1 Invalid bounce address")
    foreign = Srs([b"someone-elses-key"], "example.com").forward("someone@good.example")
    refused = await in_thread(send, stack.smtp, "", foreign, b"Subject: x\r\n\r\nbounce\r\n", helo="mx.evil.example")
    assert refused is not None and "does not carry our signature" in refused[1]
    await stack.sync()
    assert (await stack.http("relay", "/status"))["refused"]["example.com"]["byReason"] == {"srs": 2}


async def test_our_own_senders_are_not_rewritten(zone, stack):
    far = await stack.add_mx(zone, "far.test", "127.0.0.2")
    assert await in_thread(send, stack.submission, "alice@example.com", "carol@example.com",
                           message("alice@example.com", to="carol@example.com"), login="alice@example.com") is None
    await stack.until(lambda: far.messages, what="the forward at far.test")
    assert far.messages[0][0] == "alice@example.com"  # SPF for our own domain already covers us


async def test_a_sieve_redirect_leaves_with_an_srs_sender_at_the_mailboxs_domain(zone, tmp_path):
    # Another hosted domain is listed first: the queue must sign at the redirecting mailbox's domain,
    # which the mailstore names when it hands the redirect over (no hosted address in its envelope).
    zone.txt("good.example", "v=spf1 ip4:127.0.0.0/8 -all")
    mailboxes = [entry("alice", sieve='redirect "dave@far.test";\n')] + \
        [e for e in default_mailboxes() if e.name != "alice"]
    s = await start_stack(tmp_path, zone.port, mailboxes=mailboxes, domains_before=("first.example",))
    try:
        far = await s.add_mx(zone, "far.test", "127.0.0.2")
        assert await in_thread(send, s.smtp, "someone@good.example", "alice@example.com",
                               message("someone@good.example", to="alice@example.com")) is None
        await s.until(lambda: far.messages, what="the redirect at far.test")
        [(srs_sender, rcpts, data)] = far.messages
        assert rcpts == ["dave@far.test"] and b"Hello Bob." in data
        assert srs_sender.startswith("SRS0=") and srs_sender.endswith("@example.com")
        keys = load_keys(s.root / "config" / "srs" / "example.com.keys")
        assert Srs(keys, "example.com").reverse(srs_sender) == "someone@good.example"
    finally:
        await s.stop()
