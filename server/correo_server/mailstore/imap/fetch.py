"""FETCH data items (RFC 3501 sections 6.4.5 and 7.4.2; MODSEQ from RFC 7162).

Each item the client asks for is a :class:`FetchItem` that renders its part
of a ``* n FETCH (...)`` response for one message (:func:`render`).  Body
sections are slices of the stored bytes (:mod:`..message`), always sent as
literals, so 8-bit and binary content come back exactly as stored.  Items
are made by parsers registered by name in the command registry
(:mod:`.commands.fetch` registers RFC 3501's; an extension adds its own, e.g.
CONDSTORE's MODSEQ), so the FETCH command knows no item by name.

ENVELOPE, BODYSTRUCTURE and BODY come from the message's structure
(:mod:`.fetchcache`: computed once, kept in memory and in the index), not
from its bytes.  A small cache keeps recently used messages parsed, because
clients fetch a message's structure and then its parts in separate
commands.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar

from ..message import Entity, find_part, parse
from .backend import MessageInfo
from .responses import NIL, astring, flag_list, internaldate, literal
from .fetchcache import Structure


@dataclass(frozen=True)
class Section:
    part: tuple[int, ...] = ()
    text: str = ""  # "", HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME
    fields: tuple[bytes, ...] = ()

    def spec(self) -> bytes:
        """The section as echoed in the response: ``1.2.HEADER.FIELDS (FROM)``."""
        parts = [".".join(str(p) for p in self.part).encode()] if self.part else []
        if self.text:
            parts.append(self.text.encode())
        out = b".".join(parts)
        if self.text.startswith("HEADER.FIELDS"):
            out += b" (" + b" ".join(astring(f) for f in self.fields) + b")"
        return out


class ParsedCache:
    """Recently read messages and their parsed structure, bounded in bytes."""

    def __init__(self, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, tuple[bytes, Entity | None]] = OrderedDict()
        self._size = 0

    def get(self, key: tuple) -> tuple[bytes, Entity | None] | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: tuple, data: bytes, entity: Entity | None) -> None:
        if len(data) > self.max_bytes // 4:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self._size -= len(old[0])
        self._items[key] = (data, entity)
        self._size += len(data)
        while self._size > self.max_bytes and self._items:
            _, (d, _) = self._items.popitem(last=False)
            self._size -= len(d)


class Loaded:
    """A message's bytes with its structure parsed on first use."""

    def __init__(self, data: bytes, entity: Entity | None = None, on_parse=None) -> None:
        self.data = data
        self._entity = entity
        self._on_parse = on_parse

    @property
    def entity(self) -> Entity:
        if self._entity is None:
            self._entity = parse(self.data)
            if self._on_parse:
                self._on_parse(self._entity)
        return self._entity


def section_bytes(loaded: Loaded, section: Section) -> bytes | None:
    """The octets a BODY[section] names; None when the part does not exist."""
    if not section.part and section.text == "":
        return loaded.data
    top = loaded.entity
    if section.part:
        node = find_part(top, list(section.part))
        if node is None:
            return None
        if section.text == "":
            return node.body_bytes
        if section.text == "MIME":
            return node.header_bytes
        target = node.message or node
    else:
        target = top
    if section.text == "HEADER":
        return target.header_bytes
    if section.text == "TEXT":
        return target.body_bytes
    if section.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        names = [f.decode("latin-1") for f in section.fields]
        return target.header_fields(names, exclude=section.text.endswith(".NOT"))
    return None


# ---------------------------------------------------------------------------
# Items
# ---------------------------------------------------------------------------

@dataclass
class Fetched:
    """One message as the items see it."""

    msg: MessageInfo
    loaded: Loaded | None  # the content, when an item needs it
    recent: bool
    structure: Structure | None = None  # ENVELOPE, BODYSTRUCTURE, BODY (:mod:`.fetchcache`), when needed


class FetchItem:
    """One requested data item.  ``key`` names it in the response (and makes
    a repeated item appear once); ``needs_data``: the message's content must
    be read; ``sets_seen``: fetching it sets \\Seen (RFC 3501 6.4.5)."""

    key: str = ""
    needs_data: ClassVar[bool] = False
    needs_structure: ClassVar[bool] = False  # reads Fetched.structure instead of the content
    sets_seen: bool = False
    repeatable: ClassVar[bool] = False  # BODY[...] items are each answered, even when repeated

    def render(self, f: Fetched) -> bytes:
        raise NotImplementedError

    def prepare(self, session) -> None:
        """Runs once before the messages are fetched (e.g. to switch a mode on)."""

    async def preload(self, session, uids: list[int]) -> None:
        """Runs once with the UIDs to fetch, before any is rendered: data an
        item gets for many messages at once (OBJECTID's summaries)."""


class Uid(FetchItem):
    key = "UID"

    def render(self, f: Fetched) -> bytes:
        return b"UID %d" % f.msg.uid


class Flags(FetchItem):
    key = "FLAGS"

    def render(self, f: Fetched) -> bytes:
        return b"FLAGS " + flag_list(f.msg.flags | {"\\Recent"} if f.recent else f.msg.flags)


class ModSeq(FetchItem):
    """CONDSTORE's MODSEQ (RFC 7162 3.1.4); the FETCH command adds it by
    itself when CONDSTORE is on and flags are reported."""

    key = "MODSEQ"

    def render(self, f: Fetched) -> bytes:
        return b"MODSEQ (%d)" % f.msg.modseq


class InternalDate(FetchItem):
    key = "INTERNALDATE"

    def render(self, f: Fetched) -> bytes:
        return b"INTERNALDATE " + internaldate(f.msg.internaldate, f.msg.tzoffset)


class Size(FetchItem):
    key = "RFC822.SIZE"

    def render(self, f: Fetched) -> bytes:
        return b"RFC822.SIZE %d" % f.msg.size


class Envelope(FetchItem):
    key = "ENVELOPE"
    needs_structure = True

    def render(self, f: Fetched) -> bytes:
        assert f.structure is not None
        return b"ENVELOPE " + f.structure.envelope


class BodyStructure(FetchItem):
    """BODYSTRUCTURE, or BODY (the same without extension data)."""

    needs_structure = True

    def __init__(self, extended: bool) -> None:
        self.extended = extended
        self.key = "BODYSTRUCTURE" if extended else "BODY"

    def render(self, f: Fetched) -> bytes:
        assert f.structure is not None
        return self.key.encode() + b" " + (f.structure.bodystructure if self.extended else f.structure.body)


class Rfc822(FetchItem):
    """RFC822 (sets \\Seen), RFC822.HEADER, RFC822.TEXT (sets \\Seen)."""

    needs_data = True

    def __init__(self, key: str) -> None:
        self.key = key
        self.sets_seen = key != "RFC822.HEADER"

    def render(self, f: Fetched) -> bytes:
        assert f.loaded is not None
        if self.key == "RFC822":
            data = f.loaded.data
        elif self.key == "RFC822.HEADER":
            data = f.loaded.entity.header_bytes
        else:
            data = f.loaded.entity.body_bytes
        return self.key.encode() + b" " + literal(data)


class BodySection(FetchItem):
    """BODY[section]<partial> and BODY.PEEK[...] (which leaves \\Seen alone)."""

    needs_data = True
    repeatable = True

    def __init__(self, section: Section, peek: bool, partial: tuple[int, int] | None) -> None:
        self.section, self.peek, self.partial = section, peek, partial
        self.sets_seen = not peek
        self.key = "BODY[" + section.spec().decode("latin-1") + "]"

    def render(self, f: Fetched) -> bytes:
        assert f.loaded is not None
        data = section_bytes(f.loaded, self.section)
        key = b"BODY[" + self.section.spec() + b"]"
        if self.partial is not None:
            origin, count = self.partial
            key += b"<%d>" % origin
            if data is not None:
                data = data[origin:origin + count]
        return key + b" " + (NIL if data is None else literal(data))


def needs_data(items: list[FetchItem]) -> bool:
    return any(i.needs_data for i in items)


def needs_structure(items: list[FetchItem]) -> bool:
    return any(i.needs_structure for i in items)


def sets_seen(items: list[FetchItem]) -> bool:
    return any(i.sets_seen for i in items)


def render(f: Fetched, items: list[FetchItem], first: list[FetchItem] = (), last: list[FetchItem] = ()) -> bytes:
    """``(item value item value ...)`` for one message.  ``first`` / ``last``
    are items the server adds (UID for UID FETCH; FLAGS after an implicit
    \\Seen, MODSEQ under CONDSTORE) unless the client asked for them."""
    out: list[bytes] = []
    done: set[str] = set()
    for group in (first, items, last):
        for item in group:
            if not item.repeatable:
                if item.key in done:
                    continue
                done.add(item.key)
            out.append(item.render(f))
    return b"(" + b" ".join(out) + b")"
