"""Delivery truth end to end: a remote MX that keeps saying 4xx, a domain with
a short warning and give-up time; status shows the deferral, then
``DeliveryDelayed``, alice gets one delayed notice then one failure notice,
and the bounce is on the MailDomain's and alice's status."""
from __future__ import annotations

import email
import email.policy
import textwrap

import pytest

from .conftest import RecordingMX, free_port, http_json, start_stack
from .test_local_stack import ALICE, imap_messages, submit

pytestmark = pytest.mark.e2e

DOMAIN = textwrap.dedent("""\
    apiVersion: correo.dev/v1alpha1
    kind: MailDomain
    metadata: {name: example-com}
    spec:
      domain: example.com
      queue:
        retry:
          initialDelaySeconds: 1
          maxDelaySeconds: 1
          warnAfterSeconds: 2
          giveUpAfterSeconds: 12
    ---
    apiVersion: correo.dev/v1alpha1
    kind: Mailbox
    metadata: {name: alice}
    spec:
      address: alice@example.com
      passwordSecretRef: {name: alice-password}
    ---
    apiVersion: v1
    kind: Secret
    metadata: {name: alice-password}
    stringData: {password: wonderland}
    """)


def notices(stack) -> list[email.message.EmailMessage]:
    out = []
    for raw in imap_messages(stack, ALICE):
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        if msg.get_content_type() == "multipart/report":
            out.append(msg)
    return out


def action_of(notice) -> str:
    for part in notice.walk():
        if part.get_content_type() == "message/delivery-status":
            text = part.as_string() if not part.is_multipart() else "".join(
                p.as_string() for p in part.get_payload())
            for line in text.splitlines():
                if line.lower().startswith("action:"):
                    return line.split(":", 1)[1].strip().lower()
    return ""


def queue_api(stack, path: str):
    """The queue's own HTTP answer (milliseconds; a ``correo status`` run
    takes seconds on a loaded machine)."""
    return http_json(stack.state["endpoints"]["queue"]["http"] + path)


def test_deferral_then_delay_notice_then_bounce_all_visible_in_status(tmp_path, dns_server):
    """The deferred and delayed states last only until the queue gives up
    (seconds here), and a ``correo status`` run can take longer than that on a
    loaded machine.  So the remote MX holds its reply to the first attempt
    made after the delayed notice went out: while that attempt is in flight
    the message stays deferred and delayed, for as long as the test looks.
    Then the MX answers 451 again and the queue gives up (past
    giveUpAfterSeconds)."""
    yaml_dir = tmp_path / "yaml"
    yaml_dir.mkdir()
    (yaml_dir / "stack.yaml").write_text(DOMAIN)
    port = free_port()
    dns_server.add("remote.test", "MX", (10, "mx.remote.test."))
    dns_server.add("mx.remote.test", "A", "127.0.0.2")
    with RecordingMX("127.0.0.2", port) as mx:
        stack = start_stack(tmp_path / "data", [yaml_dir], "--dns", dns_server.address,
                            "--remote-smtp-port", str(port))

        def delayed_notice_sent() -> bool:
            try:
                return queue_api(stack, "/status")["totals"]["delayedNoticesSent"] >= 1
            except OSError:
                return False  # not yet: answer this attempt, the queue tries again
        mx.hold_when = delayed_notice_sent
        try:
            submit(stack, b"From: alice@example.com\r\nTo: carol@remote.test\r\nSubject: to a sulking MX\r\n"
                          b"Message-ID: <sulk@example.com>\r\n\r\nhello\r\n", to=("carol@remote.test",))

            # 1. The deferral, with the destination's own words.
            def deferred():
                q = stack.status()["MailDomain/example-com"]["status"]["queue"]
                return q if q["deferred"] == 1 and q["lastErrors"] else None
            q = stack.wait_for(deferred, timeout=60, what="the message to show as deferred")
            assert q["lastErrors"][0]["destination"] == "mx.remote.test"
            assert "451" in q["lastErrors"][0]["error"]
            assert mx.attempts >= 1

            # 2. Past warnAfterSeconds: Delivering=False, DeliveryDelayed, naming destination and error.
            def delayed():
                conds = {c["type"]: c for c in stack.status()["MailDomain/example-com"]["status"]["conditions"]}
                return conds["Delivering"] if conds["Delivering"]["status"] == "False" else None
            cond = stack.wait_for(delayed, timeout=60, what="Delivering=False")
            assert cond["reason"] == "DeliveryDelayed"
            assert "carol@remote.test" in cond["message"] and "mx.remote.test" in cond["message"]
            assert "451" in cond["message"]
            assert mx.holding.is_set()  # what held the state still: the MX had not answered
            mx.release()

            # 3. One delayed notice, then one failure notice, in alice's INBOX; then the queue is empty,
            # so no further notice can follow.
            stack.wait_for(lambda: [n for n in notices(stack) if action_of(n) == "failed"], timeout=60,
                           what="the failure notice")
            stack.wait_for(lambda: queue_api(stack, "/queue")["count"] == 0, timeout=60,
                           what="the bounced message and its notices to leave the queue")
            actions = sorted(action_of(n) for n in notices(stack))
            assert actions == ["delayed", "failed"]
            for n in notices(stack):
                assert n["From"].addresses[0].username.upper() == "MAILER-DAEMON"
                assert "report-type=delivery-status" in n["Content-Type"].replace('"', "")

            # 4. The bounce on the MailDomain and on alice's Mailbox.
            status = stack.status()
            q = status["MailDomain/example-com"]["status"]["queue"]
            assert q["bounced"] == 1 and q["deferred"] == 0 and q["delayedNoticesSent"] == 1
            assert q["lastBounces"][0]["recipient"] == "carol@remote.test"
            assert q["lastBounces"][0]["reason"].startswith("gave up after") and "451" in q["lastBounces"][0]["reason"]
            alice = status["Mailbox/alice"]["status"]["delivery"]
            assert alice["bounced"] == 1
            assert alice["lastBounce"]["recipient"] == "carol@remote.test"
            assert alice["lastBounce"]["reason"]
            assert mx.received == []  # the MX never accepted it
        finally:
            stack.stop()
