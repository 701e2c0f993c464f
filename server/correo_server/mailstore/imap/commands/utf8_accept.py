"""UTF8=ACCEPT (RFC 6855): after ``ENABLE UTF8=ACCEPT`` mailbox names
travel as UTF-8 (LIST, STATUS, SELECT ... all answer and take them so), and
APPEND takes a message with raw UTF-8 in its header as ``UTF8 (~{n})``
(stored as sent; FETCH returns it byte for byte, 8-bit strings as
literals).  Before ENABLE, a UTF-8 mailbox name is refused as IMAP4rev1
says (``NO``: not modified UTF-7)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..reader import Reader
from .base import Registry

if TYPE_CHECKING:
    from ..session import Session

NAME = "UTF8=ACCEPT"


def _on_enable(s: "Session") -> None:
    s.utf8_names = True


def _utf8_data(r: Reader) -> bytes | None:
    """``UTF8 (literal8)`` (RFC 6855 4)."""
    if not r.take(b"UTF8 ("):
        return None
    r.closers.append(")")
    if not r.take(b"~"):
        r.expected("a literal8 (~{size}) inside UTF8 (...)")
    data = r.literal()
    r.close(b")")
    return data


def register(registry: Registry) -> None:
    registry.capability(NAME)
    registry.enable(NAME, _on_enable)
    registry.append_data.append(_utf8_data)
