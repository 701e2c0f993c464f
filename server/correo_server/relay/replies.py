"""SMTP replies as values, and the enhanced status code every reply carries.

The relay advertises ENHANCEDSTATUSCODES (RFC 2034), so every reply except
the greeting, the EHLO/HELO answer and the intermediate ``334``/``354``
replies starts with a ``class.subject.detail`` code.  Replies the relay
builds itself are :class:`Reply` values with a code chosen on purpose; lines
that come from aiosmtpd's own code paths ("500 Error: bad syntax") get a
fitting default from :func:`with_status` on the way out.

Nothing here does I/O.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_HAS_STATUS = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}(?: |$)")
_CODE = re.compile(r"^(\d{3})([ -])(.*)$", re.S)

# RFC 3463 codes for replies that arrive without one.
DEFAULT_STATUS = {
    211: "2.0.0", 214: "2.0.0", 220: "2.0.0", 221: "2.0.0", 235: "2.7.0",
    250: "2.0.0", 251: "2.1.5", 252: "2.0.0",
    421: "4.3.0", 450: "4.2.0", 451: "4.3.0", 452: "4.3.1", 454: "4.7.0", 455: "4.5.4",
    500: "5.5.2", 501: "5.5.4", 502: "5.5.1", 503: "5.5.1", 504: "5.5.4",
    521: "5.3.2", 530: "5.7.0", 534: "5.7.9", 535: "5.7.8", 538: "5.7.11",
    550: "5.0.0", 551: "5.1.6", 552: "5.3.4", 553: "5.1.3", 554: "5.0.0", 555: "5.5.4",
}

# Replies that never carry an enhanced code (RFC 2034 section 3, and practice:
# a 334 carries a base64 challenge, a 354 is an intermediate reply).
_NO_STATUS = {334, 354}


def default_status(code: int) -> str:
    if code in DEFAULT_STATUS:
        return DEFAULT_STATUS[code]
    return f"{code // 100}.0.0"


@dataclass(frozen=True)
class Reply:
    """One SMTP reply.  ``reason`` is a short label for metrics and logs
    (``relay_denied``, ``unknown_recipient``...); it is never sent."""

    code: int
    status: str
    text: str
    reason: str | None = None

    def __str__(self) -> str:
        return f"{self.code} {self.status} {self.text}"

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    @classmethod
    def parse(cls, code: int, lines: list[str]) -> "Reply":
        """A reply read from a server (``lines`` without the ``250-`` prefixes);
        the enhanced code is taken from the last line when present."""
        last = lines[-1] if lines else ""
        m = re.match(r"^([245]\.\d{1,3}\.\d{1,3})(?: (.*))?$", last)
        if m:
            return cls(code, m.group(1), m.group(2) or "")
        return cls(code, default_status(code), last)


def with_status(line: str) -> str:
    """Give an outgoing reply line an enhanced status code if it lacks one.

    Multi-line replies are handled line by line (``250-`` continuation lines
    get the same code).  Lines that are not replies are returned unchanged.
    """
    if "\r\n" in line:
        return "\r\n".join(with_status(part) for part in line.split("\r\n"))
    if _HAS_STATUS.match(line):
        return line
    m = _CODE.match(line)
    if not m:
        return line
    code = int(m.group(1))
    if code in _NO_STATUS:
        return line
    text = m.group(3)
    status = default_status(code)
    return f"{m.group(1)}{m.group(2)}{status} {text}" if text else f"{m.group(1)}{m.group(2)}{status}"
