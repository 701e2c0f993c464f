"""What the relay does to an accepted message: a Received header on top,
a DKIM signature that verifies when an authenticated user sends from a
hosted domain (and none otherwise), UTF-8 addresses kept intact."""
from __future__ import annotations

import email
import email.policy
import re

import dkim

from relay_helpers import PASSWORDS, RawClient, in_thread, smtp_client


def dns_for(dkim_pair, *names):
    """dkimpy's DNS hook: the TXT record for ``sel1._domainkey.<name>``."""
    records = {f"sel1._domainkey.{name}.".encode(): f"v=DKIM1; k=rsa; p={dkim_pair[1]}".encode()
               for name in names}

    def dnsfunc(name, timeout=5):
        return records.get(name if name.endswith(b".") else name + b".")
    return dnsfunc


def submit(port: int, sender: str, rcpts: list[str], message: bytes, user="alice@example.com") -> dict:
    with smtp_client(port) as client:
        client.login(user, PASSWORDS[user])
        return client.sendmail(sender, rcpts, message)


MESSAGE = (b"From: Alice <alice@example.com>\r\nTo: friend@foreign.example\r\nSubject: signed\r\n"
           b"Date: Tue, 05 Mar 2024 10:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\r\nHello.\r\n")


async def test_received_header(make_relay):
    relay = await make_relay()
    assert await in_thread(submit, relay.submission, "alice@example.com", ["friend@foreign.example"], MESSAGE) == {}
    [message] = relay.sink.messages
    parsed = email.message_from_bytes(message.content, policy=email.policy.default)
    received = parsed.get_all("Received")
    assert len(received) == 1
    assert re.match(r"from client\.test \(unknown \[127\.0\.0\.1\]\)\s+by mx\.example\.com \(correo\) "
                    r"with ESMTPA id \w{12}\s+for <friend@foreign\.example>; \w{3}, \d\d \w{3} \d{4} ",
                    str(received[0])), received[0]
    assert "alice" not in str(received[0]).lower()  # the user who logged in is not named


async def test_dkim_signature_verifies(make_relay, dkim_pair):
    relay = await make_relay()
    assert await in_thread(submit, relay.submission, "alice@example.com", ["friend@foreign.example"], MESSAGE) == {}
    [message] = relay.sink.messages
    assert message.content.startswith(b"DKIM-Signature: ")
    signature = email.message_from_bytes(message.content)["DKIM-Signature"]
    tags = dict(part.strip().split("=", 1) for part in re.sub(r"\s+", "", signature).split(";") if part)
    assert (tags["d"], tags["s"], tags["c"], tags["a"]) == ("example.com", "sel1", "relaxed/relaxed", "rsa-sha256")
    assert "from" in tags["h"].lower()
    assert dkim.verify(message.content, dnsfunc=dns_for(dkim_pair, "example.com"))
    # and it still verifies after another hop adds its own Received header
    assert dkim.verify(b"Received: from mx.example.com by mx.foreign.example; Tue, 5 Mar 2024 10:00:01 +0000\r\n"
                       + message.content, dnsfunc=dns_for(dkim_pair, "example.com"))
    tampered = message.content.replace(b"Hello.", b"Hullo.")
    assert not dkim.verify(tampered, dnsfunc=dns_for(dkim_pair, "example.com"))


async def test_dkim_alias_domain_signs_as_itself(make_relay, dkim_pair):
    relay = await make_relay()
    message = MESSAGE.replace(b"alice@example.com", b"alice@example.net")
    assert await in_thread(submit, relay.submission, "alice@example.net", ["friend@foreign.example"], message) == {}
    content = relay.sink.messages[0].content
    assert b"d=example.net" in content.split(b"\r\n\r\n")[0]
    assert dkim.verify(content, dnsfunc=dns_for(dkim_pair, "example.net"))


async def test_no_signature_for_inbound_mail_claiming_a_hosted_from(make_relay):
    """Port 25 mail is not ours to vouch for, whatever its From: says."""
    relay = await make_relay()

    def send():
        with smtp_client(relay.smtp) as client:
            return client.sendmail("alice@example.com", ["bob@example.com"], MESSAGE)

    assert await in_thread(send) == {}
    assert b"DKIM-Signature" not in relay.sink.messages[0].content


async def test_no_signature_without_key_or_for_foreign_or_doubled_from(make_relay):
    relay = await make_relay(dkim=False)
    assert await in_thread(submit, relay.submission, "alice@example.com", ["friend@foreign.example"], MESSAGE) == {}
    assert b"DKIM-Signature" not in relay.sink.messages[0].content  # no key file: sent unsigned

    relay = await make_relay()
    # From: a domain that is not hosted, or hosted without a key: the envelope
    # sender's domain (example.com, hosted, with a key) signs instead
    for other in (b"foreign.example", b"other.example"):
        message = MESSAGE.replace(b"From: Alice <alice@example.com>", b"From: Alice <alice@" + other + b">")
        assert await in_thread(submit, relay.submission, "alice@example.com", ["friend@foreign.example"],
                               message) == {}
        assert b"d=example.com" in relay.sink.messages[-1].content.split(b"\r\n\r\n")[0]
    doubled = b"From: mallory@foreign.example\r\n" + MESSAGE
    assert await in_thread(submit, relay.submission, "alice@example.com", ["friend@foreign.example"], doubled) == {}
    assert b"DKIM-Signature" not in relay.sink.messages[-1].content


async def test_smtputf8_address_end_to_end(make_relay):
    relay = await make_relay()

    def send():
        with smtp_client(relay.smtp) as client:
            assert client.has_extn("smtputf8")
            return client.sendmail("χρήστης@παράδειγμα.example", ["δοκιμή@example.com"],
                                   "From: χρήστης@παράδειγμα.example\r\nTo: δοκιμή@example.com\r\n"
                                   "Subject: Καλημέρα\r\n\r\nΓεια σου\r\n".encode(),
                                   mail_options=["SMTPUTF8", "BODY=8BITMIME"])

    assert await in_thread(send) == {}
    [message] = relay.sink.messages
    assert message.mail_from == "χρήστης@παράδειγμα.example"
    assert message.rcpt_tos == ["δοκιμή@example.com"]
    assert "SMTPUTF8" in message.mail_options
    assert message.content.endswith("Subject: Καλημέρα\r\n\r\nΓεια σου\r\n".encode())
    assert b"with UTF8SMTP id" in message.content


async def test_utf8_address_without_smtputf8_refused(make_relay):
    relay = await make_relay()
    client = await RawClient.connect(relay.smtp)
    await client.cmd("EHLO client.example")
    await client.cmd("MAIL FROM:<someone@foreign.example>")
    code, lines = await client.cmd("RCPT TO:<δοκιμή@example.com>")
    assert (code, lines[-1][4:9]) == (553, "5.6.7")
    await client.close()
