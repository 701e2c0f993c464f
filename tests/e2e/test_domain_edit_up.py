"""A MailDomain edit on a running ``correo up`` is applied without an
outage: while it is applied a client connecting to the relay in a loop is
never refused, every message the relay accepted (250) is delivered, and the
new setting is what the relay then advertises."""
from __future__ import annotations

import smtplib
import socket
import threading
import time

import pytest

from .test_local_stack import BOB, imap_messages

pytestmark = pytest.mark.e2e


def size_advertised(stack) -> int:
    with smtplib.SMTP("127.0.0.1", stack.port("smtp"), timeout=30) as smtp:
        smtp.ehlo("probe.test")
        return int(smtp.esmtp_features["size"])


class Prober(threading.Thread):
    """Connects to the relay's SMTP port again and again: banner, then either
    QUIT or a message for bob; counts what went wrong."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.done = threading.Event()
        self.refused: list[str] = []
        self.connections = 0
        self.accepted: list[str] = []  # subjects the relay said 250 to
        self.transient = 0  # 4xx: the client would retry (not lost, not refused)
        self.queue_unavailable = 0  # 451 at the end of DATA: the relay could not hand the message over

    def run(self) -> None:
        n = 0
        while not self.done.is_set():
            n += 1
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=60) as smtp:
                    self.connections += 1
                    if n % 3 == 0:
                        subject = f"during the edit {n}"
                        try:
                            smtp.sendmail("carol@elsewhere.test", [BOB[0]],
                                          f"Subject: {subject}\r\n\r\nhello\r\n".encode())
                            self.accepted.append(subject)
                        except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused,
                                smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
                            code = getattr(exc, "smtp_code", 0) or 0
                            if b"Queue unavailable" in (getattr(exc, "smtp_error", b"") or b""):
                                self.queue_unavailable += 1
                            if 400 <= code < 500 or isinstance(exc, smtplib.SMTPRecipientsRefused):
                                self.transient += 1
                            else:
                                raise
            except smtplib.SMTPServerDisconnected:
                self.transient += 1  # a 421 from the relay handing over: the client retries
            except (ConnectionRefusedError, socket.timeout, OSError) as exc:
                self.refused.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.02)


@pytest.mark.timeout(400)  # four services restarted in turn on a loaded machine
def test_a_maildomain_edit_refuses_no_connection_and_loses_no_mail(stack, quickstart):
    assert size_advertised(stack) == 25 * 1024 * 1024
    old_relay = stack.state["services"]["relay"]
    prober = Prober(stack.port("smtp"))
    prober.start()
    try:
        stack.wait_for(lambda: prober.connections >= 5, what="the prober to be connecting")
        domain = quickstart / "maildomain.yaml"
        domain.write_text(domain.read_text() + "  relay:\n    maxMessageSize: 10Mi\n")
        stack.wait_for(lambda: "service_handed_over" in stack.log(), timeout=180,
                       what="the relay to be handed over")
        before = prober.connections
        stack.wait_for(lambda: prober.connections >= before + 5, what="the prober to go on connecting")
    finally:
        prober.done.set()
        prober.join(60)
    assert prober.refused == [], prober.refused[:5]
    assert prober.queue_unavailable == 0  # the relay waited for the restarting queue
    stack.wait_for(lambda: stack.state["services"]["relay"] != old_relay, what="state.json to name the new relay")
    assert size_advertised(stack) == 10 * 1024 * 1024
    assert prober.accepted, "no message was accepted during the edit"

    def all_delivered():
        inbox = b"".join(imap_messages(stack, BOB))
        return all(f"Subject: {s}\r\n".encode() in inbox for s in prober.accepted)
    stack.wait_for(all_delivered, timeout=120, what="every accepted message in bob's INBOX")
