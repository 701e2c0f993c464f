"""An SMTP reply as data: what a check decides, before anything is sent.

The defences (:mod:`.mailauth`, :mod:`.scanning`, :mod:`.srs`) return their
verdicts with the reply each one implies, as :class:`Reply` values; the relay
sends them.  The shape is the relay's own reply value's (``code``,
``status``, ``text``, ``reason``; ``str()`` gives the reply line), so the
relay can send one as it is.  ``reason`` is a short label for metrics and
logs (``spf_fail``, ``dmarc_reject``, ``spam``...), never sent.

This module is pure and has no dependency on the rest of correo.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    code: int
    status: str  # the RFC 3463 enhanced status code, "5.7.1"
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


def printable(text: str, limit: int = 400) -> str:
    """Text safe to put in a reply line: printable ASCII, no CR/LF, bounded."""
    out = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
    return out if len(out) <= limit else out[: limit - 3] + "..."
