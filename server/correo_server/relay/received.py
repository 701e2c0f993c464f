"""The ``Received:`` header the relay puts on top of every accepted message
(RFC 5321 section 4.4), without I/O.

Shape (folded like Postfix's)::

    Received: from client.example (unknown [192.0.2.7])
    \t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))
    \tby mx.example.com (correo) with ESMTPSA id 7QX3M2KQ4ZPA
    \tfor <bob@example.com>; Tue, 05 Mar 2024 10:00:00 +0000

The protocol names are RFC 3848's (``ESMTP``, ``ESMTPS``, ``ESMTPA``,
``ESMTPSA``) and RFC 6531's for SMTPUTF8 sessions (``UTF8SMTP``...).  The
authenticated user is *not* named: ``ESMTPSA`` says that someone logged in,
and that is all the world needs to know.  ``for`` is written only when the
message has exactly one recipient, so that Bcc recipients are not disclosed.
The relay does no reverse DNS lookup (the client is ``unknown``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?\Z")
_LITERAL = re.compile(r"\[(?:[0-9.]{7,15}|IPv6:[0-9A-Fa-f:.]{2,45})\]\Z")


@dataclass(frozen=True)
class TLSInfo:
    version: str  # "TLSv1.3"
    cipher: str  # "TLS_AES_256_GCM_SHA384"
    bits: int

    @classmethod
    def from_ssl_object(cls, ssl_object) -> "TLSInfo | None":
        if ssl_object is None:
            return None
        cipher = ssl_object.cipher()
        if not cipher:
            return None
        name, version, bits = cipher
        return cls(ssl_object.version() or version, name, int(bits or 0))


def protocol_name(*, esmtp: bool, tls: bool, authenticated: bool, smtputf8: bool) -> str:
    if not esmtp:
        return "SMTP"
    base = "UTF8SMTP" if smtputf8 else "ESMTP"
    return base + ("S" if tls else "") + ("A" if authenticated else "")


def _comment_safe(text: str, limit: int = 64) -> str:
    """Text fit for inside a header comment: printable ASCII, no parentheses
    or backslashes, bounded length."""
    cleaned = "".join(ch if " " < ch <= "~" and ch not in "()\\" else "?" for ch in text)
    return cleaned[:limit]


def _peer_literal(peer_ip: str) -> str:
    return f"[IPv6:{peer_ip}]" if ":" in peer_ip else f"[{peer_ip}]"


_last_date: tuple[tuple[int, object], str] = ((0, None), "")


def _date(when: datetime) -> str:
    """RFC 5322 date of ``when`` (one second's worth is made once: every
    message of that second shares it)."""
    global _last_date
    key = (int(when.timestamp()), when.utcoffset())
    if _last_date[0] != key:
        _last_date = (key, format_datetime(when.replace(microsecond=0)))
    return _last_date[1]


def received_header(*, helo: str | None, peer_ip: str, hostname: str, protocol: str, queue_id: str,
                    tls: TLSInfo | None, recipients: list[str], when: datetime) -> bytes:
    """The header field, folded, ending with CRLF.  ``when`` must be aware."""
    helo = (helo or "").strip()
    if helo and (_DOMAIN.match(helo) or _LITERAL.match(helo)) and len(helo) <= 255:
        origin = f"from {helo} (unknown {_peer_literal(peer_ip)})"
    else:
        shown = f" helo={_comment_safe(helo)}" if helo else ""
        origin = f"from {_peer_literal(peer_ip)} (unknown {_peer_literal(peer_ip)}{shown})"
    lines = [f"Received: {origin}"]
    if tls is not None:
        lines.append(f"\t(using {_comment_safe(tls.version, 16)} with cipher "
                     f"{_comment_safe(tls.cipher)} ({tls.bits}/{tls.bits} bits))")
    lines.append(f"\tby {hostname} (correo) with {protocol} id {queue_id}")
    date = _date(when)
    if len(recipients) == 1:
        lines.append(f"\tfor <{recipients[0]}>; {date}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{date}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")
