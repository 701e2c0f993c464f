"""SEARCH keys (RFC 3501 section 6.4.4; MODSEQ from RFC 7162): each key is a
:class:`Key` that tests one message (a :class:`Candidate`).

Keys are made by parsers registered by name in the command registry
(:mod:`.commands.search` registers RFC 3501's; an extension adds its own,
as :mod:`.commands.condstore` adds MODSEQ).  Text keys compare
case-insensitively after decoding: header values from RFC 2047
encoded-words, bodies from their transfer encoding and charset, so that
``SEARCH CHARSET UTF-8 SUBJECT café`` finds ``=?iso-8859-1?q?caf=E9?=``.
Address headers (FROM, TO, CC, BCC) also match each address in its
canonical forms (``local@domain``, the display name, ``name
<local@domain>``), so comments and folding inside an address do not hide it.
Pure functions; the session loads message bytes only when a key needs them.
"""
from __future__ import annotations

import base64
import binascii
import codecs
import email.errors
import email.header
import email.utils
import quopri
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, ClassVar

from ..message import Entity, parse
from .backend import MessageInfo
from .envelope import parse_addresses
from .reader import SeqSet

SUPPORTED_CHARSETS = ("US-ASCII", "UTF-8")


def charset_supported(charset: str | None) -> bool:
    return charset is None or charset.upper() in SUPPORTED_CHARSETS


def decode_header(value: bytes) -> str:
    """An unfolded header value as text: encoded-words decoded, raw 8-bit taken as UTF-8."""
    text = value.decode("utf-8", "replace")
    if "=?" not in text:
        return text
    try:
        return str(email.header.make_header(email.header.decode_header(text)))
    except (LookupError, ValueError, UnicodeError, email.errors.HeaderParseError):
        return text


def _decode_body(ent: Entity) -> str:
    raw = ent.body_bytes
    cte = (ent.header("Content-Transfer-Encoding") or b"").strip().lower()
    try:
        if cte == b"base64":
            raw = base64.b64decode(b"".join(raw.split()) + b"===", validate=False)
        elif cte == b"quoted-printable":
            raw = quopri.decodestring(raw)
    except (binascii.Error, ValueError):
        pass
    charset = ent.param("charset") or "utf-8"
    try:
        codecs.lookup(charset)
    except LookupError:
        charset = "utf-8"
    return raw.decode(charset, "replace")


def body_text(ent: Entity) -> str:
    """The decoded text of every text/* part (and of encapsulated messages)."""
    out: list[str] = []

    def walk(e: Entity) -> None:
        if e.is_multipart:
            for c in e.children:
                walk(c)
        elif e.message is not None:
            out.append(" ".join(decode_header(v) for _, v in e.message.headers))
            walk(e.message)
        elif e.maintype in ("text", "multipart"):
            out.append(_decode_body(e))

    walk(ent)
    return "\n".join(out)


def address_forms(value: bytes) -> list[str]:
    """What an address header matches, case-folded: the whole decoded value,
    and each address as ``local@domain``, its display name and ``name
    <local@domain>``."""
    forms = [decode_header(value).casefold()]
    for a in parse_addresses(value) or ():
        if a.mailbox is None or a.host is None:  # group markers
            continue
        addr = (a.mailbox + b"@" + a.host).decode("utf-8", "replace").casefold()
        forms.append(addr)
        if a.name:
            name = decode_header(a.name).casefold()
            forms += [name, f"{name} <{addr}>"]
    return forms


@dataclass
class Candidate:
    """One message being tested: its index data, and its content when loaded."""

    msg: MessageInfo
    seq: int
    recent: bool
    largest_seq: int
    largest_uid: int
    data: bytes | None = None
    saved: frozenset[int] = frozenset()  # "$": the UIDs a SEARCH saved (SEARCHRES)
    summary: Any = None  # the message's header summary, when a key needs it (..summary.Summary)
    _entity: Entity | None = field(default=None, repr=False)
    _body: str | None = field(default=None, repr=False)

    @property
    def entity(self) -> Entity:
        if self._entity is None:
            self._entity = parse(self.data or b"")
        return self._entity

    def body(self) -> str:
        if self._body is None:
            self._body = body_text(self.entity).casefold()
        return self._body


# ---------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------

class Key:
    """One search key.  ``needs_content``: the message's bytes must be read;
    ``needs_summary``: the message's header summary (:mod:`.summaries`)."""

    needs_content: ClassVar[bool] = False
    needs_summary: ClassVar[bool] = False

    def matches(self, c: Candidate) -> bool:
        raise NotImplementedError

    def children(self) -> tuple["Key", ...]:
        return ()

    def walk(self):
        """This key and every key inside it."""
        yield self
        for k in self.children():
            yield from k.walk()


def any_needs_content(key: Key) -> bool:
    return any(k.needs_content for k in key.walk())


@dataclass(frozen=True)
class And(Key):
    keys: tuple[Key, ...]

    def children(self) -> tuple[Key, ...]:
        return self.keys

    def matches(self, c: Candidate) -> bool:
        return all(k.matches(c) for k in self.keys)


@dataclass(frozen=True)
class Or(Key):
    a: Key
    b: Key

    def children(self) -> tuple[Key, ...]:
        return (self.a, self.b)

    def matches(self, c: Candidate) -> bool:
        return self.a.matches(c) or self.b.matches(c)


@dataclass(frozen=True)
class Not(Key):
    key: Key

    def children(self) -> tuple[Key, ...]:
        return (self.key,)

    def matches(self, c: Candidate) -> bool:
        return not self.key.matches(c)


@dataclass(frozen=True)
class All(Key):
    def matches(self, c: Candidate) -> bool:
        return True


@dataclass(frozen=True)
class Seq(Key):
    set: SeqSet

    def matches(self, c: Candidate) -> bool:
        if self.set.saved:
            return c.msg.uid in c.saved
        return self.set.contains(c.seq, c.largest_seq)


@dataclass(frozen=True)
class Uid(Key):
    set: SeqSet

    def matches(self, c: Candidate) -> bool:
        if self.set.saved:
            return c.msg.uid in c.saved
        return self.set.contains(c.msg.uid, c.largest_uid)


@dataclass(frozen=True)
class Flag(Key):
    """A system flag or keyword set (``present``) or not."""

    flag: str
    present: bool = True

    def matches(self, c: Candidate) -> bool:
        return (self.flag in c.msg.flags) == self.present


@dataclass(frozen=True)
class Recent(Key):
    """RECENT, NEW (recent and unseen) and OLD (not recent)."""

    kind: str  # recent, new, old

    def matches(self, c: Candidate) -> bool:
        if self.kind == "old":
            return not c.recent
        return c.recent and (self.kind == "recent" or "\\Seen" not in c.msg.flags)


@dataclass(frozen=True)
class Size(Key):
    larger: bool
    size: int

    def matches(self, c: Candidate) -> bool:
        return c.msg.size > self.size if self.larger else c.msg.size < self.size


@dataclass(frozen=True)
class ModSeq(Key):
    """CONDSTORE's MODSEQ: changed at or after this mod-sequence."""

    modseq: int

    def matches(self, c: Candidate) -> bool:
        return c.msg.modseq >= self.modseq


def _internal_date(msg: MessageInfo) -> date:
    return datetime.fromtimestamp(msg.internaldate, timezone(timedelta(minutes=msg.tzoffset))).date()


@dataclass(frozen=True)
class Date(Key):
    """BEFORE/ON/SINCE (internal date) and SENTBEFORE/SENTON/SENTSINCE
    (the Date: header, or the internal date without one)."""

    kind: str  # before, on, since, sentbefore, senton, sentsince
    when: date

    @property
    def needs_content(self) -> bool:  # type: ignore[override]
        return self.kind.startswith("sent")

    def matches(self, c: Candidate) -> bool:
        when = self._sent(c) if self.kind.startswith("sent") else _internal_date(c.msg)
        if self.kind.endswith("before"):
            return when < self.when
        if self.kind.endswith("on"):
            return when == self.when
        return when >= self.when

    @staticmethod
    def _sent(c: Candidate) -> date:
        value = c.entity.header("Date")
        if value is not None:
            parsed = email.utils.parsedate_tz(value.decode("latin-1", "replace"))
            if parsed is not None:
                try:
                    return date(parsed[0], parsed[1], parsed[2])
                except ValueError:
                    pass
        return _internal_date(c.msg)


_ADDRESS_HEADERS = {"from": "From", "to": "To", "cc": "Cc", "bcc": "Bcc"}


@dataclass(frozen=True)
class Text(Key):
    """FROM, TO, CC, BCC, SUBJECT, BODY and TEXT: a substring, case-insensitively."""

    needs_content = True
    where: str  # from, to, cc, bcc, subject, body, text
    needle: str  # case-folded

    def matches(self, c: Candidate) -> bool:
        needle = self.needle
        if self.where in _ADDRESS_HEADERS:
            return any(needle in form for v in c.entity.header_all(_ADDRESS_HEADERS[self.where])
                       for form in address_forms(v))
        if self.where == "subject":
            return any(needle in decode_header(v).casefold() for v in c.entity.header_all("Subject"))
        if self.where == "body":
            return needle in c.body()
        return needle in decode_header(c.entity.header_bytes).casefold() or needle in c.body()  # TEXT


@dataclass(frozen=True)
class Header(Key):
    """HEADER name string; an empty string: the header exists."""

    needs_content = True
    name: str
    needle: str  # case-folded

    def matches(self, c: Candidate) -> bool:
        values = c.entity.header_all(self.name)
        if not self.needle:
            return bool(values) or any(k.lower() == self.name.lower() for k, _ in c.entity.headers)
        return any(self.needle in decode_header(v).casefold() for v in values)


def needle(value: bytes) -> str:
    return value.decode("utf-8", "replace").casefold()
