"""Turning ``redirect`` and ``reject`` actions into what delivery sends, pure.

* :func:`redirect_message`: the message unchanged but for one new
  ``Received:`` field on top (RFC 5228 4.2: Received fields kept and one
  more, for loop detection), envelope sender kept, ``<>`` kept ``<>``.
* :func:`refusal_lines`: the LMTP reply lines for a protocol-level refusal
  (RFC 5429 2.5): ``550 5.7.1`` and the reason, one reply line per line of
  the reason, ASCII only.  ``None`` for a ``reject`` whose reason is not
  ASCII: RFC 5429 2.2 wants the exact text then, in an MDN.
* :func:`reject_mdn`: that MDN (RFC 8098 disposition ``deleted``), never to
  the null sender.
"""
from __future__ import annotations

import datetime as dt
import email.utils
import uuid
from email.header import Header

from .actions import OutgoingMessage, Redirect, Reject
from .context import Envelope
from .message import MessageView

GENERIC_REFUSAL = "Message refused by the recipient's mail filter"
MAX_REPLY_LINE = 500


def redirect_message(data: bytes, envelope: Envelope, action: Redirect, *, hostname: str, now: float,
                     zone: dt.tzinfo | None = None) -> OutgoingMessage:
    when = email.utils.format_datetime(dt.datetime.fromtimestamp(now, zone or dt.timezone.utc))
    received = (f"Received: by {hostname} (correo sieve redirect)\r\n"
                f"\tfor <{action.address}>; {when}\r\n").encode("ascii", "replace")
    return OutgoingMessage(envelope.sender, (action.address,), received + data)


def refusal_lines(action: Reject) -> list[str] | None:
    """Reply text lines (without code) for a 550 refusal, or None (send an MDN instead)."""
    reason = action.reason.replace("\r\n", "\n").strip("\n")
    if not reason.isascii():
        if not action.extended:
            return None
        reason = GENERIC_REFUSAL
    lines: list[str] = []
    for line in reason.split("\n") or [""]:
        line = "".join(ch if 32 <= ord(ch) < 127 else " " for ch in line)
        while len(line) > MAX_REPLY_LINE:
            cut = line.rfind(" ", 0, MAX_REPLY_LINE)
            cut = cut if cut > 0 else MAX_REPLY_LINE
            lines.append(line[:cut])
            line = line[cut:].lstrip(" ")
        lines.append(line)
    return [f"5.7.1 {line}" if line else "5.7.1" for line in lines] or [f"5.7.1 {GENERIC_REFUSAL}"]


def reject_mdn(message: MessageView, envelope: Envelope, action: Reject, *, mailbox: str, hostname: str,
               now: float, message_id: str | None = None) -> OutgoingMessage | None:
    """A failure MDN carrying the reason (RFC 5429 2.2.1); None for the null sender."""
    if not envelope.sender:
        return None
    boundary = f"correo-{uuid.uuid4().hex}"
    when = email.utils.format_datetime(dt.datetime.fromtimestamp(now, dt.timezone.utc))
    original_id = (message.first("message-id") or "").strip()
    subject = message.first("subject") or ""
    subj = f"Rejected: {subject}" if subject else "Rejected message"
    if not subj.isascii():
        subj = Header(subj, "utf-8").encode()
    human = ("Your message was refused by the recipient's mail filtering program.\r\n"
             "The reason given is as follows:\r\n\r\n"
             + action.reason.replace("\r\n", "\n").replace("\n", "\r\n").rstrip("\r\n") + "\r\n")
    report = (f"Reporting-UA: {hostname}; correo sieve\r\n"
              f"Final-Recipient: rfc822; {envelope.recipient}\r\n"
              + (f"Original-Message-ID: {original_id}\r\n" if original_id else "")
              + "Disposition: automatic-action/MDN-sent-automatically; deleted\r\n")
    header_end = message.data.find(b"\r\n\r\n")
    original_header = message.data[:header_end + 2] if header_end >= 0 else message.data
    parts = [
        f"From: {mailbox}",
        f"To: {envelope.sender}",
        f"Subject: {subj}",
        f"Date: {when}",
        f"Message-ID: {message_id or f'<{uuid.uuid4().hex}@{hostname}>'}",
    ]
    if original_id:
        parts.append(f"In-Reply-To: {original_id}")
    parts += [
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=disposition-notification; boundary="{boundary}"',
    ]
    body = ("\r\n".join(parts) + "\r\n\r\n"
            f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            + human
            + f"\r\n--{boundary}\r\nContent-Type: message/disposition-notification\r\n\r\n"
            + report
            + f"\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n").encode("utf-8", "surrogateescape")
    body += original_header + f"\r\n--{boundary}--\r\n".encode("ascii")
    return OutgoingMessage("", (envelope.sender,), body)
