"""SEARCH (RFC 3501 section 6.4.4; MODSEQ from RFC 7162): evaluating the key
tree :mod:`.parser` builds against one message.

Text keys compare case-insensitively after decoding: header values from
RFC 2047 encoded-words, bodies from their transfer encoding and charset, so
that ``SEARCH CHARSET UTF-8 SUBJECT café`` finds ``=?iso-8859-1?q?caf=E9?=``.
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

from ..message import Entity, parse
from ..store import MessageInfo

SUPPORTED_CHARSETS = ("US-ASCII", "UTF-8")
_HEADER_KEYS = {"from": "From", "to": "To", "cc": "Cc", "bcc": "Bcc", "subject": "Subject"}


def charset_supported(charset: str | None) -> bool:
    return charset is None or charset.upper() in SUPPORTED_CHARSETS


def needs_content(tree: tuple) -> bool:
    kind = tree[0]
    if kind in ("text", "header"):
        return True
    if kind == "date" and tree[1].startswith("sent"):
        return True
    if kind == "and":
        return any(needs_content(k) for k in tree[1])
    if kind == "or":
        return needs_content(tree[1]) or needs_content(tree[2])
    if kind == "not":
        return needs_content(tree[1])
    return False


def uses_modseq(tree: tuple) -> bool:
    kind = tree[0]
    if kind == "modseq":
        return True
    if kind == "and":
        return any(uses_modseq(k) for k in tree[1])
    if kind == "or":
        return uses_modseq(tree[1]) or uses_modseq(tree[2])
    if kind == "not":
        return uses_modseq(tree[1])
    return False


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


@dataclass
class Candidate:
    """One message being tested: its index data, and its content when loaded."""

    msg: MessageInfo
    seq: int
    recent: bool
    largest_seq: int
    largest_uid: int
    data: bytes | None = None
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


def _internal_date(msg: MessageInfo) -> date:
    return datetime.fromtimestamp(msg.internaldate, timezone(timedelta(minutes=msg.tzoffset))).date()


def _sent_date(c: Candidate) -> date:
    value = c.entity.header("Date")
    if value is not None:
        parsed = email.utils.parsedate_tz(value.decode("latin-1", "replace"))
        if parsed is not None:
            try:
                return date(parsed[0], parsed[1], parsed[2])
            except ValueError:
                pass
    return _internal_date(c.msg)


def _compare(kind: str, when: date, wanted: date) -> bool:
    if kind.endswith("before"):
        return when < wanted
    if kind.endswith("on"):
        return when == wanted
    return when >= wanted  # since


def matches(tree: tuple, c: Candidate, needle_cache: dict | None = None) -> bool:
    kind = tree[0]
    flags = c.msg.flags
    if kind == "and":
        return all(matches(k, c, needle_cache) for k in tree[1])
    if kind == "or":
        return matches(tree[1], c, needle_cache) or matches(tree[2], c, needle_cache)
    if kind == "not":
        return not matches(tree[1], c, needle_cache)
    if kind == "all":
        return True
    if kind == "seq":
        return tree[1].contains(c.seq, c.largest_seq)
    if kind == "uid":
        return tree[1].contains(c.msg.uid, c.largest_uid)
    if kind in ("answered", "deleted", "draft", "flagged", "seen"):
        return "\\" + kind.capitalize() in flags
    if kind in ("unanswered", "undeleted", "undraft", "unflagged", "unseen"):
        return "\\" + kind[2:].capitalize() not in flags
    if kind == "recent":
        return c.recent
    if kind == "new":
        return c.recent and "\\Seen" not in flags
    if kind == "old":
        return not c.recent
    if kind == "keyword":
        return tree[1] in flags
    if kind == "unkeyword":
        return tree[1] not in flags
    if kind == "larger":
        return c.msg.size > tree[1]
    if kind == "smaller":
        return c.msg.size < tree[1]
    if kind == "modseq":
        return c.msg.modseq >= tree[1]
    if kind == "date":
        which, wanted = tree[1], tree[2]
        when = _sent_date(c) if which.startswith("sent") else _internal_date(c.msg)
        return _compare(which, when, wanted)
    if kind == "text":
        field_, needle = tree[1], _needle(tree[2])
        if field_ in _HEADER_KEYS:
            return any(needle in decode_header(v).casefold() for v in c.entity.header_all(_HEADER_KEYS[field_]))
        if field_ == "body":
            return needle in c.body()
        # TEXT: the header and the body
        if needle in decode_header(c.entity.header_bytes).casefold():
            return True
        return needle in c.body()
    if kind == "header":
        name, needle = tree[1], _needle(tree[2])
        values = c.entity.header_all(name)
        if not needle:
            return bool(values) or any(k.lower() == name.lower() for k, _ in c.entity.headers)
        return any(needle in decode_header(v).casefold() for v in values)
    return False


def _needle(value: bytes) -> str:
    return value.decode("utf-8", "replace").casefold()
