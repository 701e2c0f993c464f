"""FETCH data items (RFC 3501 section 6.4.5 / 7.4.2, RFC 7162 MODSEQ).

:func:`render` turns one message and the requested attributes into the
parenthesised list of a ``* n FETCH (...)`` response.  Body sections are
slices of the stored bytes (:mod:`..message`), always sent as literals, so
8-bit and binary content come back exactly as stored.  A small cache keeps
recently used messages parsed, because clients fetch a message's structure
and then its parts in separate commands.
"""
from __future__ import annotations

from collections import OrderedDict

from ..message import Entity, find_part, parse
from ..store import MessageInfo
from .bodystructure import body_structure
from .envelope import envelope
from .parser import FetchAtt, Section
from .responses import NIL, flag_list, internaldate, literal

CONTENT_ATTS = {"RFC822", "RFC822.HEADER", "RFC822.TEXT"}
STRUCTURE_ATTS = {"ENVELOPE", "BODYSTRUCTURE", "BODY"}


def needs_data(atts: list[FetchAtt]) -> bool:
    return any(a.name in CONTENT_ATTS or a.name in STRUCTURE_ATTS or a.section is not None for a in atts)


def sets_seen(atts: list[FetchAtt]) -> bool:
    """BODY[...] (not PEEK), RFC822 and RFC822.TEXT set \\Seen."""
    return any((a.section is not None and not a.peek) or a.name in ("RFC822", "RFC822.TEXT") for a in atts)


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


def render(msg: MessageInfo, atts: list[FetchAtt], loaded: Loaded | None, *, recent: bool,
           extra_first: list[str] = (), extra_last: list[str] = ()) -> bytes:
    """``(item value item value ...)`` for one message.  ``extra_first`` /
    ``extra_last`` name items the server adds (UID for UID FETCH, FLAGS
    after an implicit \\Seen, MODSEQ under CONDSTORE) when not requested."""
    out: list[bytes] = []
    done: set[str] = set()

    def simple(name: str) -> bytes | None:
        if name == "UID":
            return b"UID %d" % msg.uid
        if name == "FLAGS":
            return b"FLAGS " + flag_list(msg.flags | {"\\Recent"} if recent else msg.flags)
        if name == "MODSEQ":
            return b"MODSEQ (%d)" % msg.modseq
        if name == "INTERNALDATE":
            return b"INTERNALDATE " + internaldate(msg.internaldate, msg.tzoffset)
        if name == "RFC822.SIZE":
            return b"RFC822.SIZE %d" % msg.size
        return None

    for name in extra_first:
        if name not in done:
            out.append(simple(name))
            done.add(name)
    for att in atts:
        name = att.name
        if att.section is not None:
            data = section_bytes(loaded, att.section)
            key = b"BODY[" + att.section.spec() + b"]"
            if att.partial is not None:
                origin, count = att.partial
                key += b"<%d>" % origin
                if data is not None:
                    data = data[origin:origin + count]
            out.append(key + b" " + (NIL if data is None else literal(data)))
            continue
        if name in done:
            continue
        done.add(name)
        value = simple(name)
        if value is not None:
            out.append(value)
        elif name == "ENVELOPE":
            out.append(b"ENVELOPE " + envelope(loaded.entity))
        elif name == "BODYSTRUCTURE":
            out.append(b"BODYSTRUCTURE " + body_structure(loaded.entity, extended=True))
        elif name == "BODY":
            out.append(b"BODY " + body_structure(loaded.entity, extended=False))
        elif name == "RFC822":
            out.append(b"RFC822 " + literal(loaded.data))
        elif name == "RFC822.HEADER":
            out.append(b"RFC822.HEADER " + literal(loaded.entity.header_bytes))
        elif name == "RFC822.TEXT":
            out.append(b"RFC822.TEXT " + literal(loaded.entity.body_bytes))
    for name in extra_last:
        if name not in done:
            out.append(simple(name))
            done.add(name)
    return b"(" + b" ".join(out) + b")"
