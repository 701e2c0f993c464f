"""Text that is safe in an SMTP reply line.

The defences put text from outside into their replies (a blocklist's TXT
record, rspamd's SMTP message, a domain name from DNS); :func:`printable`
makes it printable ASCII without CR or LF, and bounded, so that a reply
cannot be split or stuffed.  Pure; no dependency on the rest of correo.
"""
from __future__ import annotations


def printable(text: str, limit: int = 400) -> str:
    out = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
    return out if len(out) <= limit else out[: limit - 3] + "..."
