"""Vacation replies (RFC 5230, RFC 6131) under RFC 3834's rules, as pure functions.

:func:`decide` says whether a reply goes out and why (a CamelCase reason and
a sentence, cert-manager style): never to the null sender, never to the
mailbox's own addresses or to addresses only machines read, never to mail
that is itself automatic (``Auto-Submitted``), from a mailing list
(``List-*`` fields, ``Precedence: bulk/list/junk``), or not addressed to
this mailbox, and at most once per sender and response in the period
(through the tracking state, read only; the caller records
:func:`tracking_key` once the reply is queued).

:func:`build_reply` writes the reply itself: ``Auto-Submitted:
auto-replied``, ``In-Reply-To``/``References``, a subject of ``Auto: ...``
unless one is given, MIME text in UTF-8 (or the script's own MIME entity
with ``:mime``), CRLF line ends.  It goes out with the null reverse-path
(RFC 5230 5.1) to the original envelope sender.
"""
from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import quopri
import uuid
from dataclasses import dataclass
from email.header import Header

from .addresses import parse_address_list, parse_path, split_detail
from .context import Envelope
from .message import MessageView

RECIPIENT_FIELDS = ("to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc")
LIST_FIELDS = ("list-id", "list-help", "list-subscribe", "list-unsubscribe", "list-post", "list-owner",
               "list-archive")
# Local parts only machines read (RFC 5230 4.6; RFC 2142 but not postmaster,
# which people read); and the usual "no reply" addresses.
AUTOMATED_LOCALPARTS = frozenset({"mailer-daemon", "listserv", "majordomo", "noreply", "no-reply",
                                  "do-not-reply", "donotreply", "bounce", "bounces"})


@dataclass(frozen=True)
class VacationRequest:
    """A ``vacation`` action as evaluated (variables expanded)."""

    reason: str
    handle: str  # :handle, or one made of the unexpanded arguments (RFC 5230 4.2)
    seconds: int  # the effective period
    subject: str | None = None
    from_: str | None = None
    addresses: tuple[str, ...] = ()
    mime: bool = False


@dataclass(frozen=True)
class Decision:
    send: bool
    reason: str
    message: str
    reply_from: str = ""  # the mailbox address the message was sent to (for From:)


def synthesized_handle(reason: str, subject: str | None, from_: str | None, mime: bool) -> str:
    """RFC 5230 4.2: the same combination of arguments is the same response.
    Counted strings, so that one string in two places never collides."""
    parts = [reason, subject or "", from_ or "", "mime" if mime else ""]
    return "".join(f"{len(p)}:{p};" for p in parts)


def tracking_key(mailbox: str, handle: str, sender: str) -> str:
    """The key of "this response was sent to this sender" in the tracking state
    (hashed: the state keeps no addresses in clear, RFC 7352 6)."""
    data = "\0".join(("vacation", mailbox.lower(), handle, sender.lower()))
    return "v:" + hashlib.sha256(data.encode("utf-8", "surrogateescape")).hexdigest()


def _norm(address: str) -> str:
    return address.strip().lower()


def own_addresses(mailbox: str, aliases: tuple[str, ...], envelope: Envelope, extra: tuple[str, ...],
                  delimiter: str) -> set[str]:
    own = {_norm(a) for a in (mailbox, *aliases, envelope.recipient, envelope.original_recipient or "", *extra) if a}
    for a in list(own):
        local, _, domain = a.rpartition("@")
        user, detail = split_detail(local, delimiter)
        if detail is not None:
            own.add(f"{user}@{domain}")
    return own


def _addressed_to(message: MessageView, own: set[str], delimiter: str) -> str:
    for name in RECIPIENT_FIELDS:
        for field_addrs in message.addresses(name):
            for a in field_addrs:
                if not a.valid or not a.domain:
                    continue
                full = _norm(a.all)
                user, detail = split_detail(a.local, delimiter)
                if full in own or (detail is not None and _norm(f"{user}@{a.domain}") in own):
                    return a.all
    return ""


def automated_sender(sender: str) -> bool:
    addr = parse_path(sender)
    local = (addr.local if addr else sender).lower()
    return (local in AUTOMATED_LOCALPARTS or local.startswith("owner-") or local.endswith("-request")
            or local.endswith("-owner") or local.endswith("-bounces"))


def decide(message: MessageView, envelope: Envelope, request: VacationRequest, *, mailbox: str,
           aliases: tuple[str, ...] = (), already_replied: bool, delimiter: str = "+") -> Decision:
    """Whether to send this vacation reply (pure: the state was read by the caller)."""
    sender = envelope.sender.strip()
    if not sender:
        return Decision(False, "NullSender", "the message has the null sender <> (a bounce): never answered")
    own = own_addresses(mailbox, aliases, envelope, request.addresses, delimiter)
    if _norm(sender) in own:
        return Decision(False, "OwnAddress", f"the sender {sender} is this mailbox itself")
    if automated_sender(sender):
        return Decision(False, "AutomatedSender", f"the sender {sender} is an address only machines read")
    auto = message.first("auto-submitted")
    if auto is not None and auto.split(";", 1)[0].strip().lower() != "no":
        return Decision(False, "AutoSubmitted", f"the message is automatic (Auto-Submitted: {auto[:60]})")
    for name in LIST_FIELDS:
        if message.exists(name):
            return Decision(False, "MailingList", f"the message comes from a mailing list ({name} field)")
    precedence = (message.first("precedence") or "").strip().lower()
    if precedence in ("bulk", "list", "junk"):
        return Decision(False, "BulkPrecedence", f"the message is bulk mail (Precedence: {precedence})")
    suppress = (message.first("x-auto-response-suppress") or "").lower()
    if any(w.strip() in ("all", "oof", "autoreply") for w in suppress.split(",")):
        return Decision(False, "AutoResponseSuppressed", "the sender asked for no automatic replies "
                        "(X-Auto-Response-Suppress)")
    matched = _addressed_to(message, own, delimiter)
    if not matched:
        return Decision(False, "NotAddressedToMe", "none of this mailbox's addresses is in To, Cc or Bcc "
                        "(RFC 5230 4.5)")
    if already_replied:
        return Decision(False, "AlreadyReplied", f"{sender} already had this reply within the period", matched)
    return Decision(True, "Reply", f"auto-reply to {sender}", matched)


# -- the reply message ------------------------------------------------------------------------

def _encode_header(value: str) -> str:
    if value.isascii():
        return value
    return Header(value, "utf-8").encode()


def _fold(name: str, items: list[str]) -> str:
    line = f"{name}:"
    lines: list[str] = []
    for item in items:
        if len(line) + 1 + len(item) > 78 and line != f"{name}:":
            lines.append(line)
            line = " " + item
        else:
            line += " " + item
    lines.append(line)
    return "\r\n".join(lines)


def _crlf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")


def _format_from(value: str) -> str:
    """A :from value as a header: display names encoded when not ASCII."""
    items = email.utils.getaddresses([value])
    if len(items) == 1 and items[0][1]:
        name, addr = items[0]
        return email.utils.formataddr((name, addr), charset="utf-8") if name else addr
    return value


def build_reply(message: MessageView, envelope: Envelope, request: VacationRequest, *, reply_from: str,
                now: float, hostname: str, message_id: str | None = None,
                zone: dt.tzinfo | None = None) -> bytes:
    """The reply's bytes (headers and body, CRLF), ready for the queue."""
    if request.subject is not None:
        subject = request.subject
    else:
        original = message.first("subject")
        subject = f"Auto: {original}" if original else "Automated reply"
    when = dt.datetime.fromtimestamp(now, zone or dt.timezone.utc)
    headers = [
        f"From: {_format_from(request.from_) if request.from_ else reply_from}",
        f"To: {envelope.sender}",
        f"Subject: {_encode_header(subject.replace(chr(13), ' ').replace(chr(10), ' '))}",
        f"Date: {email.utils.format_datetime(when)}",
        f"Message-ID: {message_id or f'<{uuid.uuid4().hex}@{hostname}>'}",
    ]
    original_id = (message.first("message-id") or "").strip()
    if original_id:
        headers.append(f"In-Reply-To: {original_id}")
        refs = (message.first("references") or "").split()
        if not refs:
            refs = (message.first("in-reply-to") or "").split()[:1]
        headers.append(_fold("References", [r for r in refs if r.startswith("<")][-20:] + [original_id]))
    headers.append("Auto-Submitted: auto-replied")
    headers.append("MIME-Version: 1.0")
    if request.mime:
        entity = _crlf(request.reason)
        head, sep, body = entity.partition("\r\n\r\n")
        if not sep:  # no header in the entity: all of it is text
            head, body = "Content-Type: text/plain; charset=us-ascii", entity
        return ("\r\n".join(headers) + "\r\n" + head.strip("\r\n") + "\r\n\r\n" + body).encode(
            "utf-8", "surrogateescape")
    text = _crlf(request.reason)
    if not text.endswith("\r\n"):
        text += "\r\n"
    raw = text.encode("utf-8", "surrogateescape")
    if raw.isascii() and all(len(line) <= 998 for line in raw.split(b"\r\n")):
        headers += ["Content-Type: text/plain; charset=us-ascii", "Content-Transfer-Encoding: 7bit"]
        body = raw
    else:
        headers += ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: quoted-printable"]
        body = quopri.encodestring(raw.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n")
    return ("\r\n".join(headers) + "\r\n\r\n").encode("ascii") + body


def recipient_of_reply(envelope: Envelope) -> str:
    """Replies go to the return path (RFC 5230 4), never to From: or Reply-To:."""
    return envelope.sender.strip()


def first_address(text: str) -> str:
    items = parse_address_list(text)
    return items[0].all if items and items[0].valid else text
