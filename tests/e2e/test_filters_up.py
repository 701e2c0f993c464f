"""Issue 11's "done when", on ``correo up`` with the filters on, as a new user
tries it: the quickstart with ``spec.filter.rspamd.managed: true`` (a real
rspamd that ``correo up`` starts) and a loopback DNS (``--dns``) publishing
the senders' SPF and DMARC records.  Forged own-domain mail is refused,
GTUBE is refused, a DMARC-quarantined message lands in Junk, a full mailbox
refuses at RCPT, and ``correo status`` shows the refusals by reason."""
from __future__ import annotations

import imaplib
import shutil
import smtplib

import pytest

from .conftest import start_stack

pytestmark = pytest.mark.e2e

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def message(sender: str, to: str, subject: str, body: str = "Hello.\r\n") -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{abs(hash((sender, subject)))}@t>\r\n"
            f"Date: Fri, 04 Dec 2026 10:00:00 +0000\r\n\r\n{body}").encode()


def send(port: int, envelope_from: str, rcpt: str, data: bytes, *, login: tuple[str, str] | None = None):
    """None when accepted, else (code, text) of the refusal."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.good.example", timeout=60) as client:
        if login:
            client.login(*login)
        try:
            client.sendmail(envelope_from, [rcpt], data)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = exc.recipients[rcpt]
            return code, text.decode()
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            return exc.smtp_code, exc.smtp_error.decode()
    return None


def folder_count(port: int, user: tuple[str, str], folder: str) -> int:
    imap = imaplib.IMAP4("127.0.0.1", port)
    try:
        imap.login(*user)
        typ, data = imap.select(folder, readonly=True)
        return int(data[0]) if typ == "OK" else 0
    finally:
        imap.logout()


@pytest.mark.skipif(shutil.which("rspamd") is None, reason="needs rspamd: apt-get install rspamd "
                    "(scripts/setup-test-env installs it)")
def test_a_new_user_tries_the_filters_on_correo_up(tmp_path, quickstart, dns_server):
    dns_server.add("good.example", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    dns_server.add("quarantine.example", "TXT", "v=spf1 ip4:192.0.2.1 -all")
    dns_server.add("_dmarc.quarantine.example", "TXT", "v=DMARC1; p=quarantine")
    with open(quickstart / "maildomain.yaml", "a") as fh:
        fh.write("  filter:\n    rspamd:\n      managed: true\n")
    stack = start_stack(tmp_path / "data", [quickstart], "--dns", dns_server.address, timeout=300)
    try:
        smtp, submission, imap = stack.port("smtp"), stack.port("submission"), stack.port("imap")
        alice, bob = ("alice@example.com", "wonderland"), ("bob@example.com", "canwefixit")

        # 1. Someone on the Internet claims to be alice: refused, though nothing is published in DNS.
        forged = send(smtp, "alice@example.com", "bob@example.com",
                      message("alice@example.com", "bob@example.com", "please pay this"))
        assert forged is not None and forged[0] == 550, forged
        # ...while alice herself, logged in on submission, is not checked.
        assert send(submission, "alice@example.com", "bob@example.com",
                    message("alice@example.com", "bob@example.com", "lunch?", "menu of the day\r\n" * 10000),
                    login=alice) is None

        # 2. GTUBE from a sender whose SPF passes: rspamd says reject.
        gtube = send(smtp, "someone@good.example", "alice@example.com",
                     message("someone@good.example", "alice@example.com", "spam", f"{GTUBE}\r\n"))
        assert gtube is not None and gtube[0] == 550 and gtube[1].startswith("5.7.1"), gtube

        # 3. The From: domain says quarantine and nothing aligns: delivered, into Junk.
        assert send(smtp, "bounces@good.example", "alice@example.com",
                    message("The Boss <boss@quarantine.example>", "alice@example.com", "wire the money")) is None
        stack.wait_for(lambda: folder_count(imap, alice, "Junk") == 1, timeout=60, what="the message in alice's Junk")
        assert folder_count(imap, alice, "INBOX") == 0

        # 4. bob's mailbox is full (the administrator lowered his quota under what he keeps).
        stack.wait_for(lambda: folder_count(imap, bob, "INBOX") == 1, timeout=60, what="alice's lunch mail to bob")
        boxes = (quickstart / "mailboxes.yaml").read_text()
        assert "quota: 512Mi" in boxes
        (quickstart / "mailboxes.yaml").write_text(boxes.replace("quota: 512Mi", "quota: 100Ki"))
        stack.run("apply", str(quickstart))

        def refused_at_rcpt():
            got = send(smtp, "someone@good.example", "bob@example.com",
                       message("someone@good.example", "bob@example.com", "hello bob"))
            return got if got is not None and got[0] == 452 else None
        code, text = stack.wait_for(refused_at_rcpt, timeout=60, what="bob's full mailbox refusing at RCPT")
        assert text.startswith("4.2.2 <bob@example.com>: Mailbox is full"), text

        # 5. correo status: the refusals by reason, and alice's Junk.
        def refusals():
            domain = stack.status()["MailDomain/example-com"]["status"]
            found = domain.get("incoming", {}).get("refusedByReason", {})
            return found if {"ownDomain", "spam", "quota"} <= set(found) else None
        by_reason = stack.wait_for(refusals, timeout=60, what="the refusals in the MailDomain status")
        assert by_reason["ownDomain"] >= 1 and by_reason["spam"] == 1 and by_reason["quota"] >= 1
        assert stack.status()["Mailbox/alice"]["status"]["incoming"]["junk"] == 1
        table = stack.run("status").stdout
        assert "refused" in table and "on arrival" in table and "spam 1" in table, table
        assert "JUNK" in table
    finally:
        stack.stop()
