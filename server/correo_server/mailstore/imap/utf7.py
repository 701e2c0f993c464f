"""Modified UTF-7 (RFC 3501 section 5.1.3), the encoding of IMAP4rev1 mailbox names.

Printable US-ASCII stands for itself (``&`` is written ``&-``); anything else
is UTF-16BE in a modified base64 (``,`` instead of ``/``) between ``&`` and
``-``.  The store keeps names in this encoding, exactly as they travel.
"""
from __future__ import annotations

import base64
import re


class InvalidUTF7(ValueError):
    pass


def _b64(chars: str) -> str:
    raw = chars.encode("utf-16-be")
    return base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")


def encode(text: str) -> str:
    """Unicode → modified UTF-7."""
    out: list[str] = []
    pending: list[str] = []
    for ch in text:
        if 0x20 <= ord(ch) <= 0x7E:
            if pending:
                out.append("&" + _b64("".join(pending)) + "-")
                pending = []
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    if pending:
        out.append("&" + _b64("".join(pending)) + "-")
    return "".join(out)


_SHIFT = re.compile(r"&([^-]*)-")


def decode(text: str) -> str:
    """Modified UTF-7 → Unicode; :class:`InvalidUTF7` for anything malformed
    (including needlessly encoded printable ASCII, which RFC 3501 forbids)."""
    if any(not 0x20 <= ord(c) <= 0x7E for c in text):
        raise InvalidUTF7("mailbox names are 7-bit in IMAP4rev1")
    out: list[str] = []
    pos = 0
    for m in _SHIFT.finditer(text):
        plain = text[pos:m.start()]
        if "&" in plain:
            raise InvalidUTF7("unterminated & sequence")
        out.append(plain)
        body = m.group(1)
        if body == "":
            out.append("&")
        else:
            if not re.fullmatch(r"[A-Za-z0-9+,]+", body):
                raise InvalidUTF7("bad base64 in & sequence")
            padded = body.replace(",", "/") + "=" * (-len(body) % 4)
            try:
                raw = base64.b64decode(padded, validate=True)
                chars = raw.decode("utf-16-be")
            except (ValueError, UnicodeDecodeError):
                raise InvalidUTF7("bad UTF-16 in & sequence") from None
            if any(0x20 <= ord(c) <= 0x7E for c in chars):
                raise InvalidUTF7("printable ASCII must not be encoded")
            if _b64(chars) != body:
                raise InvalidUTF7("non-canonical & sequence")
            out.append(chars)
        pos = m.end()
    rest = text[pos:]
    if "&" in rest:
        raise InvalidUTF7("unterminated & sequence")
    out.append(rest)
    return "".join(out)


def is_valid(text: str) -> bool:
    try:
        decode(text)
    except InvalidUTF7:
        return False
    return True


def from_wire(raw: bytes) -> str:
    """A LIST/LSUB pattern or reference as a client sent it: 7-bit as is;
    8-bit UTF-8 (sent by some clients against the RFC) converted to mUTF-7,
    so that it matches (as in Dovecot).  Never for a mailbox *name*: those
    must be valid mUTF-7 or the command is refused (see
    :meth:`.parser.Reader.mailbox`)."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return encode(raw.decode("utf-8"))  # UnicodeDecodeError: the caller answers BAD
    return text
