"""``correo up`` end to end: real processes, real clients, the quickstart YAML."""
from __future__ import annotations

import email
import json
import email.policy
import imaplib
import os
import poplib
import signal
import smtplib
import ssl
import subprocess
import textwrap
import time
from email.message import EmailMessage

import pytest

from host_tools import needs_swaks_tls

from .conftest import ROOT, correo_cmd, start_stack

pytestmark = pytest.mark.e2e

ALICE = ("alice@example.com", "wonderland")
BOB = ("bob@example.com", "canwefixit")


def tls_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the local stack's certificate is self-signed
    return ctx


def mime_with_attachment(subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = ALICE[0]
    msg["To"] = BOB[0]
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@example.com>"
    msg.set_content("Grüße aus dem Wunderland — 8-bit text.\n", cte="8bit")
    msg.add_attachment(bytes(range(256)) * 64, maintype="application", subtype="octet-stream",
                       filename="blob.bin")
    return msg.as_bytes(policy=email.policy.SMTP)


def submit(stack, raw: bytes, sender=ALICE, to=(BOB[0],)) -> None:
    with smtplib.SMTP("127.0.0.1", stack.port("submission"), timeout=30) as smtp:
        smtp.starttls(context=tls_context())
        smtp.login(*sender)
        smtp.sendmail(sender[0], list(to), raw)


def imap_messages(stack, user=BOB, folder="INBOX") -> list[bytes]:
    imap = imaplib.IMAP4("127.0.0.1", stack.port("imap"), timeout=30)
    try:
        imap.starttls(ssl_context=tls_context())
        imap.login(*user)
        imap.select(folder, readonly=True)
        _, data = imap.uid("SEARCH", None, "ALL")
        out = []
        for uid in data[0].split():
            _, parts = imap.uid("FETCH", uid, "(BODY.PEEK[])")
            out.append(parts[0][1])
        return out
    finally:
        imap.logout()


def pop3_messages(stack, user=BOB) -> list[bytes]:
    pop = poplib.POP3("127.0.0.1", stack.port("pop3"), timeout=30)
    try:
        pop.stls(context=tls_context())
        pop.user(user[0])
        pop.pass_(user[1])
        count, _ = pop.stat()
        return [b"\r\n".join(pop.retr(i + 1)[1]) + b"\r\n" for i in range(count)]
    finally:
        pop.quit()


def wait_for_message(stack, subject: str, user=BOB) -> bytes:
    def find():
        for raw in imap_messages(stack, user):
            if f"Subject: {subject}".encode() in raw:
                return raw
        return None
    return stack.wait_for(find, what=f"message {subject!r} in {user[0]}'s INBOX")


def test_submission_with_starttls_and_auth_reaches_bob_over_imap_and_pop3_byte_identical(stack):
    raw = mime_with_attachment("attachment round trip")
    submit(stack, raw)
    fetched = wait_for_message(stack, "attachment round trip")
    # Relay and mailstore only prepend trace headers (Received, DKIM-Signature,
    # Return-Path, Delivered-To): the message itself comes back byte for byte.
    assert fetched.endswith(raw)
    assert b"Delivered-To: bob@example.com" in fetched and b"Received: " in fetched
    parsed = email.message_from_bytes(fetched, policy=email.policy.default)
    (attachment,) = list(parsed.iter_attachments())
    assert attachment.get_content() == bytes(range(256)) * 64
    popped = [m for m in pop3_messages(stack) if b"attachment round trip" in m]
    assert popped and popped[0].endswith(raw)


@needs_swaks_tls
def test_swaks_submits_as_the_try_it_line_says(stack):
    result = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{stack.port('submission')}", "-tls", "--auth-user", ALICE[0],
         "--auth-password", ALICE[1], "--from", ALICE[0], "--to", BOB[0], "--header", "Subject: via swaks"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    wait_for_message(stack, "via swaks")
    assert "swaks --server" in stack.log()  # the banner printed the try-it line


def test_inbound_mail_for_bob_is_delivered_and_foreign_domains_are_refused(stack):
    msg = b"From: someone@remote.test\r\nTo: bob@example.com\r\nSubject: inbound on 25\r\n\r\nhello\r\n"
    with smtplib.SMTP("127.0.0.1", stack.port("smtp"), timeout=30) as smtp:
        smtp.sendmail("someone@remote.test", ["bob@example.com"], msg)
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            smtp.sendmail("someone@remote.test", ["victim@elsewhere.test"], msg)
    code, reply = refused.value.recipients["victim@elsewhere.test"]
    assert code == 554 and b"5.7.1" in reply
    wait_for_message(stack, "inbound on 25")


def test_status_reports_ready_domain_and_mailboxes_with_endpoints(stack):
    status = stack.wait_for(lambda: (s := stack.status()) and all(
        c["status"] == "True" for c in s["MailDomain/example-com"]["status"]["conditions"]
        if c["type"] == "Ready") and s, what="Ready status")
    domain = status["MailDomain/example-com"]["status"]
    conditions = {c["type"]: c for c in domain["conditions"]}
    for t in ("Ready", "RelayAvailable", "QueueAvailable", "MailstoreAvailable", "Delivering"):
        assert conditions[t]["status"] == "True", conditions[t]
        assert conditions[t]["observedGeneration"] == 1 and conditions[t]["reason"] and conditions[t]["message"]
    assert {r["purpose"] for r in domain["dnsRecords"]} == {"MX", "SPF", "DKIM", "DMARC", "SRV", "MTA-STS", "TLS-RPT",
                                                           "Autoconfig", "Autodiscover"}
    assert domain["endpoints"]["submission"].endswith(f":{stack.port('submission')}")
    bob = status["Mailbox/bob"]["status"]
    assert {c["type"]: c["status"] for c in bob["conditions"]} == {"Ready": "True", "QuotaExceeded": "False"}
    assert bob["usage"]["quota"] == "512Mi"
    table = stack.run("status").stdout
    assert "example-com" in table and "bob@example.com" in table


def test_a_mailbox_added_to_the_yaml_works_without_restarting_services(stack, quickstart):
    pids = dict(stack.state["services"])
    (quickstart / "carol.yaml").write_text(textwrap.dedent("""\
        apiVersion: correo.dev/v1alpha1
        kind: Mailbox
        metadata: {name: carol}
        spec:
          address: carol@example.com
          passwordSecretRef: {name: carol-password}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {name: carol-password}
        stringData: {password: sweet-caroline}
        """))
    carol = ("carol@example.com", "sweet-caroline")

    def carol_receives():
        submit(stack, b"Subject: welcome carol\r\n\r\nhi\r\n", to=(carol[0],))
        return True
    stack.wait_for(carol_receives, what="carol to be accepted by the relay")
    wait_for_message(stack, "welcome carol", user=carol)
    assert stack.state["services"] == pids  # nothing was restarted
    result = stack.run("apply")
    assert "already applied" in result.stdout  # the watcher was quicker


def test_restart_on_the_same_data_folder_keeps_all_mail(tmp_path, quickstart):
    data = tmp_path / "data"
    first = start_stack(data, [quickstart])
    try:
        submit(first, b"Subject: survives restart\r\n\r\nkeep me\r\n")
        wait_for_message(first, "survives restart")
    finally:
        assert first.stop() == 0
    assert not (data / "state.json").exists()
    second = start_stack(data, [quickstart])
    try:
        assert any(b"survives restart" in m for m in imap_messages(second))
    finally:
        second.stop()


def test_a_crashed_service_is_restarted(stack):
    old = stack.state["services"]["mailstore"]
    os.kill(old, signal.SIGKILL)
    stack.wait_for(lambda: stack.state["services"].get("mailstore") not in (None, old), what="mailstore restart")
    submit(stack, b"Subject: after crash\r\n\r\nstill here\r\n")
    wait_for_message(stack, "after crash")


def test_queue_commands_work_against_the_local_stack_without_flags(stack):
    # Everything so far was delivered: the queue is empty, and says so.
    submit(stack, b"Subject: through the queue\r\n\r\nhi\r\n")
    wait_for_message(stack, "through the queue")
    assert "Mail queue is empty" in stack.run("queue", "list").stdout
    listing = json.loads(stack.run("queue", "-o", "json", "list").stdout)
    assert listing == {"count": 0, "messages": []}
    missing = stack.run("queue", "show", "NOSUCHID", check=False)
    assert missing.returncode == 1 and "NOSUCHID" in (missing.stdout + missing.stderr)


def test_second_up_on_the_same_data_refuses_cleanly(stack, quickstart):
    result = subprocess.run(
        correo_cmd("up", str(quickstart), "--data", str(stack.data), "--ephemeral-ports"),
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "already running" in result.stderr


def test_sigterm_stops_everything(tmp_path, quickstart):
    s = start_stack(tmp_path / "data", [quickstart])
    pids = list(s.state["services"].values())
    assert s.stop() == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert service_processes(s.data) == []
    assert "stopped; mail and queue are kept" in s.log()


def service_processes(data) -> list[int]:
    """Processes running on this data folder's configuration (the services
    and helpers of its ``correo up``), found by their command lines."""
    want = str(data / "config").encode()
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                    if want in fh.read().split(b"\0"):
                        found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_sigterm_while_starting_stops_every_child(tmp_path, quickstart):
    """Ctrl-C or SIGTERM while the services are still starting (the first
    one has just been spawned, the others not yet): ``correo up`` starts
    nothing more, stops what runs and exits cleanly."""
    data = tmp_path / "data"
    log_path = tmp_path / "up.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(correo_cmd("up", str(quickstart), "--data", str(data), "--ephemeral-ports"),
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    try:
        while not service_processes(data):  # the mailstore is being spawned
            assert proc.poll() is None, log_path.read_text()
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert service_processes(data) == []
    assert "stopped; mail and queue are kept" in log_path.read_text()
    assert not (data / "state.json").exists()  # no stack is said to run there


def test_services_do_not_outlive_a_killed_up_and_the_data_folder_is_free_again(tmp_path, quickstart):
    s = start_stack(tmp_path / "data", [quickstart])
    pids = list(s.state["services"].values())
    os.killpg(s.process.pid, signal.SIGKILL)  # `correo up` and nothing else: services run in their own sessions
    s.process.wait(10)

    def all_gone():
        for pid in pids:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            return False
        return True
    s.wait_for(all_gone, timeout=30, what="the services to exit with their parent")
    again = start_stack(tmp_path / "data", [quickstart])  # the lock died with the process
    again.stop()
