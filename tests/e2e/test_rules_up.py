"""Mail rules on ``correo up`` (issue 14), as a user meets them: the quickstart
with a Sieve rule and an auto-reply on alice and a catch-all on the domain,
mail sent with SMTP, read back with IMAP (imapclient), a personal script
managed with sievelib.  One stack for the module; the tests run in order.
The auto-reply's interval is crossed by moving the mailstore's clock
(``CORREO_CLOCK_OFFSET_FILE``), never by sleeping."""
from __future__ import annotations

import json
import os
import shutil
import smtplib
import ssl
import subprocess
import sys

import pytest

from .conftest import ROOT, start_stack

pytestmark = pytest.mark.e2e

ALICE = ("alice@example.com", "wonderland")
BOB = ("bob@example.com", "canwefixit")
RULE = """\
  sieve: |
    require ["fileinto", "mailbox"];
    if header :contains "subject" "[news]" {
      fileinto :create "News";
    }
  autoReply:
    subject: Out of office
    body: Alice is away until Monday.
    intervalDays: 7
"""
BROKEN = """\
  sieve: |
    require ["fileinto"];
    if header :contains "subject" "[news]" {
      fileinto "News"
    }
"""


@pytest.fixture(scope="module")
def rules_stack(tmp_path_factory):
    base = tmp_path_factory.mktemp("rules-up")
    yaml_dir = base / "yaml"
    shutil.copytree(ROOT / "examples" / "quickstart", yaml_dir)
    boxes = (yaml_dir / "mailboxes.yaml").read_text()
    head, sep, rest = boxes.partition("    - postmaster@example.com\n")
    (yaml_dir / "mailboxes.yaml").write_text(head + sep + RULE + rest)
    with open(yaml_dir / "maildomain.yaml", "a") as fh:
        fh.write("  catchAll: bob@example.com\n")
    offset = base / "clock-offset"
    offset.write_text("0")
    old = os.environ.get("CORREO_CLOCK_OFFSET_FILE")
    os.environ["CORREO_CLOCK_OFFSET_FILE"] = str(offset)
    try:
        stack = start_stack(base / "data", [yaml_dir])
    finally:
        if old is None:
            os.environ.pop("CORREO_CLOCK_OFFSET_FILE", None)
        else:
            os.environ["CORREO_CLOCK_OFFSET_FILE"] = old
    stack.yaml_dir = yaml_dir
    stack.offset = offset
    yield stack
    stack.stop()


def tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def submit(stack, subject: str, *, sender=BOB, to=ALICE[0], headers: str = "") -> None:
    raw = (f"From: {sender[0]}\r\nTo: {to}\r\nSubject: {subject}\r\n"
           f"Message-ID: <{subject.replace(' ', '-')}@example.com>\r\n{headers}\r\nbody\r\n").encode()
    with smtplib.SMTP("127.0.0.1", stack.port("submission"), timeout=30) as smtp:
        smtp.starttls(context=tls())
        smtp.login(*sender)
        smtp.sendmail(sender[0], [to], raw)


def inbound(stack, subject: str, *, sender: str, to: str, headers: str = "") -> None:
    """Mail from the world on port 25."""
    raw = f"From: someone <x@elsewhere.example>\r\nTo: {to}\r\nSubject: {subject}\r\n{headers}\r\nbody\r\n"
    with smtplib.SMTP("127.0.0.1", stack.port("smtp"), timeout=30) as smtp:
        smtp.sendmail(sender, [to], raw.encode())


def imap(stack, user):
    from imapclient import IMAPClient
    client = IMAPClient("127.0.0.1", port=stack.port("imap"), ssl=False, timeout=30)
    client.starttls(tls())
    client.login(*user)
    return client


def subjects(stack, user, folder="INBOX") -> list[str]:
    client = imap(stack, user)
    try:
        if folder not in [f[2] for f in client.list_folders()]:
            return []
        client.select_folder(folder, readonly=True)
        found = client.fetch(client.search("ALL"), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
        return [v[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().strip().removeprefix("Subject: ")
                for _, v in sorted(found.items())]
    finally:
        client.logout()


def settled(stack, user, folder, subject) -> None:
    """``subject`` is in the folder and the queue holds nothing more: every
    reply the rules made for it is delivered (they are queued before the
    mailstore acknowledges the message)."""
    stack.wait_for(lambda: subject in subjects(stack, user, folder), what=f"{subject!r} in {user[0]}'s {folder}")
    stack.wait_for(lambda: json.loads(stack.run("queue", "list", "-o", "json").stdout)["messages"] == [],
                   what="the queue to be empty")


def auto_replies(stack) -> int:
    return sum(1 for s in subjects(stack, BOB) if s == "Out of office")


def test_no_auto_reply_to_a_list_or_to_the_null_sender(rules_stack):
    submit(rules_stack, "list digest", headers="List-Id: <team.lists.example.com>\r\n")
    settled(rules_stack, ALICE, "INBOX", "list digest")
    inbound(rules_stack, "delivery status", sender="", to=ALICE[0])
    settled(rules_stack, ALICE, "INBOX", "delivery status")
    assert auto_replies(rules_stack) == 0


def test_auto_reply_goes_once_per_sender_per_interval(rules_stack):
    submit(rules_stack, "lunch on friday?")
    settled(rules_stack, ALICE, "INBOX", "lunch on friday?")
    assert auto_replies(rules_stack) == 1
    submit(rules_stack, "or saturday?")
    settled(rules_stack, ALICE, "INBOX", "or saturday?")
    assert auto_replies(rules_stack) == 1  # the same sender within the interval: no second reply
    rules_stack.offset.write_text(str(8 * 86400))  # a week and a day later
    submit(rules_stack, "back yet?")
    settled(rules_stack, ALICE, "INBOX", "back yet?")
    assert auto_replies(rules_stack) == 2
    client = imap(rules_stack, BOB)
    try:
        client.select_folder("INBOX", readonly=True)
        uid = client.search(["SUBJECT", "Out of office"])[0]
        reply = client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"]
    finally:
        client.logout()
    assert b"Auto-Submitted: auto-replied" in reply and b"Alice is away until Monday." in reply
    assert b"In-Reply-To: <lunch-on-friday?@example.com>" in reply


def test_a_fileinto_rule_files_the_message_into_a_folder_seen_over_imap(rules_stack):
    submit(rules_stack, "[news] weekly digest")
    settled(rules_stack, ALICE, "News", "[news] weekly digest")
    assert "[news] weekly digest" not in subjects(rules_stack, ALICE)


def test_a_subaddress_lands_in_its_folder(rules_stack):
    client = imap(rules_stack, BOB)
    try:
        client.create_folder("receipts")
    finally:
        client.logout()
    inbound(rules_stack, "your order", sender="shop@elsewhere.example", to="bob+receipts@example.com")
    settled(rules_stack, BOB, "receipts", "your order")


def test_the_catch_all_delivers_unknown_addresses(rules_stack):
    inbound(rules_stack, "to whom it may concern", sender="x@elsewhere.example", to="sales@example.com")
    settled(rules_stack, BOB, "INBOX", "to whom it may concern")


def test_a_personal_script_from_a_mail_client_runs_after_the_admins(rules_stack, monkeypatch):
    from sievelib.managesieve import Client

    host, port = rules_stack.state["endpoints"]["managesieve"].rsplit(":", 1)
    monkeypatch.setenv("SSL_CERT_FILE", str(rules_stack.data / "config" / "tls" / "tls.crt"))  # correo up's own CA
    client = Client(host, int(port))
    assert client.connect(*BOB, starttls=True, authmech="PLAIN")
    assert client.putscript("personal", 'require "fileinto";\n'
                                        'if header :contains "subject" "[me]" { fileinto "Personal"; }\n')
    assert client.setactive("personal")
    client.logout()
    client = imap(rules_stack, BOB)
    try:
        client.create_folder("Personal")
    finally:
        client.logout()
    submit(rules_stack, "[me] note to self", sender=ALICE, to=BOB[0])
    settled(rules_stack, BOB, "Personal", "[me] note to self")
    status = rules_stack.status()["Mailbox/bob"]["status"]
    rules_stack.wait_for(lambda: rules_stack.status()["Mailbox/bob"]["status"]["rules"].get("userScript")
                         == "personal", what="bob's status to show the personal script")
    assert status["rules"]["adminScript"] is False


def test_status_shows_the_rules_in_force(rules_stack):
    rules = rules_stack.wait_for(lambda: rules_stack.status()["Mailbox/alice"]["status"].get("rules"),
                                 what="alice's rules in status")
    assert rules["adminScript"] is True and rules["autoReply"] is True and rules["errors"] == 0


def test_a_broken_script_is_refused_with_its_line_and_column_and_nothing_changes(rules_stack):
    path = rules_stack.yaml_dir / "mailboxes.yaml"
    good = path.read_text()
    path.write_text(good.replace(RULE, BROKEN))
    try:
        result = subprocess.run([sys.executable, "-m", "correo_operator.cli", "validate", str(rules_stack.yaml_dir)],
                                capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert result.returncode == 1
        assert (f"{path}:16 (document 1, Mailbox default/alice): spec.sieve: line 4, column 1 "
                f"(mailboxes.yaml line 16, column 5): ") in result.stderr
        applied = rules_stack.run("apply", str(rules_stack.yaml_dir), check=False)
        assert applied.returncode != 0 and "the running stack keeps its configuration" in applied.stdout + applied.stderr
    finally:
        path.write_text(good)
    submit(rules_stack, "[news] still filed")  # the running rules are the good ones
    settled(rules_stack, ALICE, "News", "[news] still filed")


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is missing: apt install swaks "
                    "(scripts/setup-test-env does)")
def test_swaks_as_the_readme_says(rules_stack):
    out = subprocess.run(["swaks", "--server", f"127.0.0.1:{rules_stack.port('submission')}", "-tls",
                          "--auth-user", ALICE[0], "--auth-password", ALICE[1], "--from", ALICE[0],
                          "--to", "bob+receipts@example.com", "--header", "Subject: swaks receipt"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    settled(rules_stack, BOB, "receipts", "swaks receipt")
