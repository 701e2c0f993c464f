"""Delivery status notifications (RFC 3464): "delayed" and "failed".

A notice is a ``multipart/report; report-type=delivery-status`` message with
three parts: a text a person reads, a ``message/delivery-status`` part (one
block about the message: Reporting-MTA, Arrival-Date; one block per recipient:
Final-Recipient, Action, Status, Remote-MTA, Diagnostic-Code,
Last-Attempt-Date, and Will-Retry-Until for "delayed"), and the original
message's header as ``text/rfc822-headers``.  It comes from
``MAILER-DAEMON@<hostname>`` and travels with the null sender ``<>``
(:mod:`.runner` queues it; it never builds one for a message whose sender is
``<>``).

Pure: the caller passes the time, the records and the original header.
"""
from __future__ import annotations

import email.utils
import secrets
from dataclasses import dataclass

from .records import Envelope, Recipient
from .schedule import human_duration

DELAYED = "delayed"
FAILED = "failed"
MAX_FIELD = 900  # keep each field well under the 998-octet line limit


def rfc5322_date(ts: float) -> str:
    return email.utils.formatdate(ts, localtime=False, usegmt=True)


def original_header(data: bytes) -> bytes:
    """The header block of a message (up to the first empty line), CRLF ends."""
    text = data.replace(b"\r\n", b"\n")
    head, _, _ = text.partition(b"\n\n")
    return head.rstrip(b"\n").replace(b"\n", b"\r\n") + b"\r\n"


def _clean(value: str) -> str:
    value = " ".join(value.split())
    return value[:MAX_FIELD]


def status_code(r: Recipient, action: str) -> str:
    """RFC 3463 status for a recipient: the server's enhanced code; 5.4.7
    (delivery time expired) when the queue gave up on a temporary failure."""
    reply = r.reply
    if action == FAILED and reply.startswith("gave up after"):
        return "5.4.7"
    text = reply.split(": ", 1)[-1] if reply.startswith("gave up after") else reply
    parts = text.split(None, 2)
    if len(parts) >= 2 and parts[0][:1] in "245" and parts[1].count(".") == 2 and parts[1][0] == parts[0][0]:
        return parts[1]
    if parts and parts[0].isdigit():
        return f"{parts[0][0]}.0.0"
    return "5.0.0" if action == FAILED else "4.0.0"


def diagnostic(r: Recipient) -> str:
    reply = r.reply
    if reply.startswith("gave up after"):
        reply = reply.split(": ", 1)[-1]
    return _clean(reply)


@dataclass(frozen=True)
class Notice:
    kind: str  # DELAYED or FAILED
    data: bytes  # the whole message
    subject: str


def build(kind: str, *, hostname: str, env: Envelope, recipients: list[Recipient], header: bytes,
          now: float, retry_until: float | None = None, warn_after: float = 0.0,
          boundary: str | None = None, message_id: str | None = None) -> Notice:
    """The notice about ``recipients`` of the message ``env`` for its sender."""
    boundary = boundary or f"{env.id}.{secrets.token_hex(8)}/{hostname}"
    message_id = message_id or f"<{env.id}.{kind}.{secrets.token_hex(4)}@{hostname}>"
    if kind == DELAYED:
        subject = "Delayed Mail (still being retried)"
    else:
        subject = "Undelivered Mail Returned to Sender"

    # -- the part a person reads ------------------------------------------
    lines = [f"This is the mail system at host {hostname}.", ""]
    if kind == DELAYED:
        lines += [
            "####################################################################",
            "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #",
            "####################################################################",
            "",
            f"Your message could not be delivered for more than {human_duration(warn_after)}",
            "to the recipients listed below.",
        ]
        if retry_until is not None:
            lines.append(f"It will be retried until {rfc5322_date(retry_until)}.")
        lines += [
            "",
            "The headers of the original message are attached.",
        ]
    else:
        lines += [
            "I'm sorry to have to inform you that your message could not",
            "be delivered to one or more recipients. The headers of the",
            "original message are attached.",
            "",
            "For further assistance, please send mail to postmaster.",
            "",
            "If you do so, please include this problem report.",
        ]
    lines += ["", "                   The mail system", ""]
    for r in recipients:
        lines.append(f"<{r.rcpt.address}>: {r.reply or 'not yet attempted'}")
        if r.rcpt.original and r.rcpt.original.lower() != r.rcpt.address.lower():
            lines.append(f"    (originally sent to <{r.rcpt.original}>)")
    human = "\r\n".join(lines) + "\r\n"

    # -- the machine-readable report ---------------------------------------
    fields = [f"Reporting-MTA: dns; {hostname}", f"X-Correo-Queue-ID: {env.id}",
              f"Arrival-Date: {rfc5322_date(env.arrival)}", ""]
    for r in recipients:
        fields.append(f"Final-Recipient: rfc822; {r.rcpt.address}")
        if r.rcpt.original and r.rcpt.original.lower() != r.rcpt.address.lower():
            fields.append(f"Original-Recipient: rfc822; {r.rcpt.original}")
        fields.append(f"Action: {kind}")
        fields.append(f"Status: {status_code(r, kind)}")
        if r.remote_mta:
            fields.append(f"Remote-MTA: dns; {r.remote_mta}")
        if r.reply:
            fields.append(f"Diagnostic-Code: smtp; {diagnostic(r)}")
        if r.attempts:
            fields.append(f"Last-Attempt-Date: {rfc5322_date(r.attempts[-1].time)}")
        if kind == DELAYED and retry_until is not None:
            fields.append(f"Will-Retry-Until: {rfc5322_date(retry_until)}")
        fields.append("")
    report = "\r\n".join(fields)

    header = original_header(header)
    eight_bit = not (human.isascii() and report.isascii() and header.isascii())
    cte = "8bit" if eight_bit else "7bit"
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{env.sender}>",
        f"Subject: {subject}",
        f"Date: {rfc5322_date(now)}",
        f"Message-ID: {message_id}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        f"Content-Transfer-Encoding: {cte}",
        "",
        "This is a MIME-encapsulated message.",
        "",
    ]
    out = "\r\n".join(head).encode() + b"\r\n"
    out += (f"--{boundary}\r\n"
            "Content-Description: Notification\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: {cte}\r\n\r\n").encode() + human.encode() + b"\r\n"
    out += (f"--{boundary}\r\n"
            "Content-Description: Delivery report\r\n"
            "Content-Type: message/delivery-status\r\n\r\n").encode() + report.encode() + b"\r\n"
    title = "Undelivered Message Headers" if kind == FAILED else "Delayed Message Headers"
    out += (f"--{boundary}\r\n"
            f"Content-Description: {title}\r\n"
            "Content-Type: text/rfc822-headers\r\n\r\n").encode() + header + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return Notice(kind, out, subject)
