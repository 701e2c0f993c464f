"""Following one message through a running ``correo up``, as an admin does
with Postfix's queue id: the id in the client's ``queued as`` reply is the
one in the ``Received:`` header and in the relay's, the queue's and the
mailstore's log lines about it."""
from __future__ import annotations

import imaplib
import re
import smtplib

import pytest

from .conftest import RecordingMX, free_port, start_stack
from .test_local_stack import ALICE, BOB, imap_messages, tls_context

pytestmark = pytest.mark.e2e


def test_one_id_from_the_smtp_reply_through_the_queue_to_the_mailstore(stack):
    with smtplib.SMTP("127.0.0.1", stack.port("submission"), timeout=30) as smtp:
        smtp.starttls(context=tls_context())
        smtp.login(*ALICE)
        smtp.mail(ALICE[0])
        smtp.rcpt(BOB[0])
        code, reply = smtp.data(b"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: trail\r\n\r\nhi\r\n")
    assert code == 250
    queue_id = re.search(r"queued as (\S+)", reply.decode()).group(1)

    raw = stack.wait_for(lambda: next((m for m in imap_messages(stack, BOB) if b"Subject: trail" in m), None),
                         what="the message in bob's INBOX")
    received = re.search(rb"^Received: .*?(?=\r\n\S)", raw, re.S | re.M).group(0)
    assert re.search(rb"\sid " + queue_id.encode() + rb"\s", received), received

    def lines_about_it():  # console lines: "service | event ... queue_id=..."
        said = [(ln.split("|")[0].strip(), ln) for ln in stack.log().splitlines() if queue_id in ln]
        return said if (any(svc == "relay" and "message_accepted" in ln for svc, ln in said)
                        and any(svc == "queue" and "delivered" in ln for svc, ln in said)
                        and any(svc == "mailstore" and "lmtp_delivered" in ln for svc, ln in said)) else None
    stack.wait_for(lines_about_it, what=f"relay, queue and mailstore log lines naming {queue_id}")
    assert "relay_id" not in stack.log()  # nobody needed a second id


def test_two_recipients_retrying_show_in_the_status_table_and_the_queue_listing(tmp_path, dns_server, quickstart):
    port = free_port()
    dns_server.add("remote.test", "MX", (10, "mx.remote.test."))
    dns_server.add("mx.remote.test", "A", "127.0.0.2")
    with RecordingMX("127.0.0.2", port, rcpt_reply="451 4.7.1 Greylisted, try again later"):
        stack = start_stack(tmp_path / "data", [quickstart], "--dns", dns_server.address,
                            "--remote-smtp-port", str(port))
        try:
            with smtplib.SMTP("127.0.0.1", stack.port("submission"), timeout=30) as smtp:
                smtp.starttls(context=tls_context())
                smtp.login(*ALICE)
                smtp.mail(ALICE[0])
                smtp.rcpt("carol@remote.test")
                smtp.rcpt("dave@remote.test")
                code, reply = smtp.data(b"From: alice@example.com\r\nSubject: greylisted\r\n\r\nhi\r\n")
            assert code == 250
            queue_id = re.search(r"queued as (\S+)", reply.decode()).group(1)

            def table():
                out = stack.run("status").stdout
                return out if re.search(r"example-com\s+example\.com\s+True\s+2\s+0\s+Retrying", out) else None
            out = stack.wait_for(table, timeout=60, what="the domain's row to say Retrying with 2 deferred")
            assert "example-com: Delivering=True (Retrying)" in out and "451 4.7.1 Greylisted" in out
            assert re.search(r"alice\s+alice@example\.com\s+True\s+.*\s2\s+0\s+Retrying", out), out

            listing = stack.run("queue", "list").stdout
            assert queue_id in listing and "carol@remote.test  deferred" in listing
            assert re.search(r"next attempt \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)", listing), listing
            assert re.search(r"deferred .*next_attempt=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ queue_id=" + queue_id,
                             stack.log()), stack.log()[-3000:]
        finally:
            stack.stop()


def test_a_mailbox_edit_logs_what_changed_and_a_suspended_login_says_suspended(stack, quickstart):
    boxes = quickstart / "mailboxes.yaml"
    boxes.write_text(boxes.read_text().replace("  quota: 512Mi\n", "  quota: 512Mi\n  suspended: true\n"))
    stack.wait_for(lambda: [ln for ln in stack.log().splitlines()
                            if "mailboxes_applied" in ln and "bob@example.com: suspended" in ln],
                   what="correo up to log that bob was suspended")

    imap = imaplib.IMAP4("127.0.0.1", stack.port("imap"), timeout=30)
    try:
        imap.starttls(ssl_context=tls_context())
        for password in ("not-his", BOB[1]):
            with pytest.raises(imaplib.IMAP4.error):
                imap.login(BOB[0], password)
    finally:
        imap.shutdown()

    def logged():
        lines = stack.log().splitlines()
        failed = [ln for ln in lines if "imap_login_failed" in ln and "bob@example.com" in ln]
        reloaded = [ln for ln in lines if ln.startswith("mailstore") and "directory_reloaded" in ln
                    and "bob@example.com: suspended" in ln]
        return failed if len(failed) >= 2 and reloaded else None
    wrong, right = stack.wait_for(logged, what="the mailstore's reload and two failed IMAP logins of bob")
    assert "reason=suspended_wrong_password" in wrong and "reason=suspended " in right + " "
