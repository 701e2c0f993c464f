"""IMAP output, exactly per the RFC 3501 grammar (section 9).

Every string goes out as an atom, a quoted string or a literal, chosen by
its content: a quoted string cannot carry CR, LF, NUL or 8-bit octets (and
is kept short), so those become ``{n}\\r\\n`` literals.  ``NIL`` stands for
an absent nstring.  Builders here return ``bytes``; nothing does I/O.
"""
from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from typing import Iterable

NIL = b"NIL"
CRLF = b"\r\n"
_QUOTABLE = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*")
_ATOM = re.compile(rb"[^(){ \x00-\x1f\x7f%*\"\\\]\x80-\xff]+")
_ASTRING_ATOM = re.compile(rb"[^(){ \x00-\x1f\x7f%*\"\\\x80-\xff]+")
MAX_QUOTED = 1024
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _b(value: str | bytes) -> bytes:
    return value if isinstance(value, (bytes, bytearray)) else value.encode("utf-8")


def literal(value: bytes) -> bytes:
    return b"{%d}\r\n" % len(value) + value


def quoted(value: bytes) -> bytes:
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def string(value: str | bytes) -> bytes:
    """A quoted string when the grammar allows one, else a literal."""
    value = _b(value)
    if len(value) <= MAX_QUOTED and _QUOTABLE.fullmatch(value):
        return quoted(value)
    return literal(value)


def nstring(value: str | bytes | None) -> bytes:
    return NIL if value is None else string(value)


def astring(value: str | bytes) -> bytes:
    """An atom when the value is one (and is not ``NIL``), else a string."""
    value = _b(value)
    if value and _ASTRING_ATOM.fullmatch(value) and value.upper() != b"NIL":
        return value
    return string(value)


def is_atom(value: bytes) -> bool:
    return bool(_ATOM.fullmatch(value))


def mailbox(name: str) -> bytes:
    """Mailbox names are always quoted (or literals), as Dovecot does: clients
    never have to guess whether ``NIL`` or ``INBOX`` is an atom."""
    return string(name)


def plist(items: Iterable[bytes]) -> bytes:
    """A parenthesised list of already-encoded items."""
    return b"(" + b" ".join(items) + b")"


def flag_list(flags: Iterable[str]) -> bytes:
    return b"(" + " ".join(sorted(flags, key=_flag_order)).encode("ascii", "replace") + b")"


_SYSTEM_ORDER = {"\\Answered": 0, "\\Flagged": 1, "\\Deleted": 2, "\\Seen": 3, "\\Draft": 4, "\\Recent": 5}


def _flag_order(flag: str) -> tuple[int, str]:
    return (_SYSTEM_ORDER.get(flag, 10), flag)


def number_set(numbers: Iterable[int]) -> bytes:
    """Compact sequence-set of sorted numbers: ``1:3,5,7:9``."""
    nums = sorted(set(numbers))
    out = []
    i = 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        out.append(str(nums[i]) if i == j else f"{nums[i]}:{nums[j]}")
        i = j + 1
    return ",".join(out).encode("ascii")


def internaldate(ts: float, tzoffset_minutes: int) -> bytes:
    """``"17-Jul-1996 02:44:25 -0700"`` (date-day-fixed: space-padded day)."""
    tz = timezone(timedelta(minutes=tzoffset_minutes))
    dt = datetime.fromtimestamp(int(ts), tz)
    sign = "+" if tzoffset_minutes >= 0 else "-"
    off = abs(tzoffset_minutes)
    text = f"{dt.day:2d}-{MONTHS[dt.month - 1]}-{dt.year:04d} {dt:%H:%M:%S} {sign}{off // 60:02d}{off % 60:02d}"
    return b'"' + text.encode("ascii") + b'"'


def untagged(text: str | bytes) -> bytes:
    return b"* " + _b(text) + CRLF


def tagged(tag: str, status: str, text: str, code: str | bytes | None = None) -> bytes:
    """``tag OK [CODE] text``; status is OK, NO or BAD."""
    code_part = b"[" + _b(code) + b"] " if code else b""
    return _b(tag) + b" " + status.encode("ascii") + b" " + code_part + _b(text) + CRLF


def continuation(text: str = "") -> bytes:
    return b"+ " + _b(text) + CRLF if text else b"+ \r\n"


def now_offset_minutes() -> int:
    return (time.localtime().tm_gmtoff or 0) // 60
