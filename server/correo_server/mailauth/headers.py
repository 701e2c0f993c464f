"""The header section of a message as raw fields: read, remove, prepend.

The defences read a few header fields (``From``, ``DKIM-Signature``,
``Authentication-Results``, ``X-Spam-*``) and change the header section in
two ways only: removing fields (forged ``Authentication-Results:``, stale
``X-Spam-*``) and adding fields on top.  Everything else, the body above all,
passes through byte for byte, so that DKIM signatures made upstream still
verify downstream.  Pure functions over bytes; no I/O.
"""
from __future__ import annotations

import email.utils
import functools
import re
from typing import Callable, Iterable

_FIELD_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")


class Field:
    """One header field as written (immutable)."""

    __slots__ = ("name", "raw", "lname")

    def __init__(self, name: str, raw: bytes) -> None:
        object.__setattr__(self, "name", name)  # as written
        object.__setattr__(self, "raw", raw)  # the whole field, continuation lines and final CRLF included
        object.__setattr__(self, "lname", name.lower())

    def __setattr__(self, name, value):
        raise AttributeError("Field is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Field) and (self.name, self.raw) == (other.name, other.raw)

    def __hash__(self) -> int:
        return hash((self.name, self.raw))

    def __repr__(self) -> str:
        return f"Field(name={self.name!r}, raw={self.raw!r})"

    @property
    def value(self) -> str:
        """The unfolded value, leading and trailing whitespace removed."""
        _, _, rest = self.raw.partition(b":")
        text = rest.decode("utf-8", "replace")
        return re.sub(r"\r?\n(?=[ \t])", "", text).strip()


# The last header section split, and its fields and length: the checks at the
# end of DATA (DKIM, DMARC's author, the forged-results removal, X-Spam-*)
# each split the same message; the key is the header bytes (up to and
# including the first empty line), which alone decide the split.
_last: tuple[bytes, tuple[Field, ...], int] = (b"\x00", (), 0)
_CACHED_HEAD_BYTES = 64 * 1024  # a larger one (or a message without an empty line) is not kept


def split(message: bytes) -> tuple[list[Field], bytes]:
    """The header fields and the rest (the empty line and the body).

    A line that is neither a field nor a continuation ends the header
    section (as a lenient reader does); it stays with the body."""
    global _last
    end = message.find(b"\r\n\r\n")
    head = message if end < 0 else message[:end + 4]
    last = _last
    if last[0] == head:
        return list(last[1]), message[last[2]:]
    fields, pos = _split(head)
    if len(head) <= _CACHED_HEAD_BYTES:
        _last = (head, tuple(fields), pos)
    return fields, message[pos:]


def _split(message: bytes) -> tuple[list[Field], int]:
    fields: list[Field] = []
    pos = 0
    size = len(message)
    while pos < size:
        end = message.find(b"\n", pos)
        end = size if end < 0 else end + 1
        line = message[pos:end]
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and fields:
            last = fields[-1]
            fields[-1] = Field(last.name, last.raw + line)
        else:
            m = _FIELD_NAME.match(line)
            if not m:
                break
            fields.append(Field(m.group(1).decode("ascii"), line))
        pos = end
    return fields, pos


def valid_name(name: str) -> bool:
    """A header field name RFC 5322 allows (printable ASCII, no colon)."""
    return bool(name) and _FIELD_NAME.match(f"{name}:".encode("utf-8", "replace")) is not None and name.isascii()


def join(fields: Iterable[Field], rest: bytes) -> bytes:
    return b"".join(f.raw for f in fields) + rest


def values(message: bytes, name: str) -> list[str]:
    fields, _ = split(message)
    lname = name.lower()
    return [f.value for f in fields if f.lname == lname]


def remove(message: bytes, drop: Callable[[Field], bool]) -> tuple[bytes, list[Field]]:
    """The message without the fields ``drop`` selects, and those fields.
    Unchanged (the same object) when nothing is dropped."""
    fields, rest = split(message)
    dropped = [f for f in fields if drop(f)]
    if not dropped:
        return message, []
    return join((f for f in fields if not drop(f)), rest), dropped


def fold(name: str, items: list[str], *, separator: str = ";", width: int = 78) -> bytes:
    """``Name: item; item; item`` folded so that lines stay under ``width``
    where the words allow it: between items, each starting a line when it
    does not fit after the last; an item longer than a line is folded
    between its words (unfolding restores the same text).  CRLF at the end."""
    head = f"{name}:"
    lines: list[str] = []
    line = head
    for i, item in enumerate(items):
        piece = item + (separator if i < len(items) - 1 else "")
        if len(line) + 1 + len(piece) <= width:
            line = f"{line} {piece}"
            continue
        if line != head:
            lines.append(line)
            line = "\t"
        for word in piece.split(" "):
            if line == "\t":
                line += word
            elif line == head or len(line) + 1 + len(word) <= width:
                line = f"{line} {word}"
            else:
                lines.append(line)
                line = "\t" + word
    lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def author_domains(message: bytes) -> tuple[list[str], str]:
    """The domains of the ``From:`` addresses (RFC 5322 author), lower-case,
    in order, without repeats, and a problem when the field is not what
    RFC 5322 asks for (none, several fields, an address without domain)."""
    found = values(message, "From")
    if not found:
        return [], "no From header field"
    domains, problem = _author_domains(tuple(found))
    return list(domains), problem


@functools.lru_cache(maxsize=1024)
def _author_domains(found: tuple[str, ...]) -> tuple[tuple[str, ...], str]:
    """:func:`author_domains` of the ``From:`` values (a sender's are the
    same message after message; parsing them is most of DMARC's cost)."""
    domains: list[str] = []
    problem = "" if len(found) == 1 else f"{len(found)} From header fields"
    for value in found:
        addresses = [a for _n, a in email.utils.getaddresses([value]) if a]
        if not addresses:
            problem = problem or "From header field without an address"
        for addr in addresses:
            local, at, domain = addr.rpartition("@")
            domain = domain.strip().rstrip(".").lower()
            if not at or not domain or not local:
                problem = problem or f"From address {addr!r} has no domain"
                continue
            if domain not in domains:
                domains.append(domain)
    return tuple(domains), problem
