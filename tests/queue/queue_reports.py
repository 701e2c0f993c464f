"""Reading delivery status notifications back with Python's ``email`` package,
the way a mail client would, and checking they are valid RFC 3464 reports."""
from __future__ import annotations

import email.utils
from dataclasses import dataclass


@dataclass
class Report:
    message: object  # the whole notice (email.message.EmailMessage)
    human: str
    per_message: dict[str, str]
    per_recipient: list[dict[str, str]]
    headers: str  # the text/rfc822-headers part


def parse_report(msg) -> Report:
    """Check the structure RFC 3464 requires and return its fields."""
    assert msg.get_content_type() == "multipart/report", msg.get_content_type()
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["From"].addresses[0].username == "MAILER-DAEMON"
    parts = msg.get_payload()
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    human = parts[0].get_content()
    blocks = parts[1].get_payload()  # the email package splits the status into header blocks
    assert len(blocks) >= 2, "a per-message block and at least one per-recipient block"
    per_message = {k: str(v) for k, v in blocks[0].items()}
    per_recipient = [{k: str(v) for k, v in b.items()} for b in blocks[1:]]
    headers = parts[2].get_payload()
    if not isinstance(headers, str):
        headers = parts[2].get_content()
    return Report(msg, human, per_message, per_recipient, headers)


def check_fields(report: Report, *, hostname: str, action: str) -> None:
    """Every field the issue names, with the right syntax."""
    pm = report.per_message
    assert pm["Reporting-MTA"] == f"dns; {hostname}"
    assert email.utils.parsedate_to_datetime(pm["Arrival-Date"]) is not None
    for rcpt in report.per_recipient:
        assert rcpt["Final-Recipient"].startswith("rfc822; ")
        assert rcpt["Action"] == action
        status = rcpt["Status"]
        assert status[0] == ("5" if action == "failed" else "4"), status
        assert len(status.split(".")) == 3 and all(p.isdigit() for p in status.split("."))
        assert rcpt["Diagnostic-Code"].startswith("smtp; ")
        assert email.utils.parsedate_to_datetime(rcpt["Last-Attempt-Date"]) is not None
        if action == "delayed":
            assert email.utils.parsedate_to_datetime(rcpt["Will-Retry-Until"]) is not None
        else:
            assert "Will-Retry-Until" not in rcpt
