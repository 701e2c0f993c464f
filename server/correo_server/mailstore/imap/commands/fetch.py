"""FETCH (RFC 3501 6.4.5): the data items are :mod:`..fetch` items made by
the parsers registered by name (RFC 3501's here; CONDSTORE's MODSEQ in
:mod:`.condstore`); modifiers after the items (``(CHANGEDSINCE n)``) are the
registry's FETCH modifiers, whose ``keep`` leaves messages out.

BODY[...] (not PEEK), RFC822 and RFC822.TEXT set \\Seen first and then
report the new FLAGS; under CONDSTORE, MODSEQ goes with reported FLAGS and
with any modifier (RFC 7162 3.1.4).  A message expunged by another session
meanwhile is left out and the reply is ``NO [EXPUNGEISSUED]`` (RFC 5530)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import fetch as F
from ..backend import MessageGone
from ..fetchcache import Structure, structure_of
from ..reader import Reader, SeqSet
from .base import Command, Options, Parse, Registry, Reply, State, bad, modifiers, no, ok

if TYPE_CHECKING:
    from ..session import Session

MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
FLUSH_AT = 256 * 1024  # send what is buffered past this many octets
_ITEM = re.compile(rb"[A-Za-z0-9.]+")
_MACRO = re.compile(rb"[A-Za-z]+(?=[ \r\n]|\Z)")
_SECTION_WORD = re.compile(rb"[A-Za-z.]+")
_PARTIAL = re.compile(rb"<([0-9]{1,19})\.([0-9]{1,19})>")


def item(r: Reader, registry: Registry) -> F.FetchItem:
    word = r.match(_ITEM)
    if word is None:
        r.expected("a fetch attribute")
    name = word.decode().upper()
    parser = registry.fetch_items.get(name)
    if parser is None:
        r.fail(f"Unknown fetch attribute {name[:30]}")
    return parser(r, name)


def section(r: Reader) -> F.Section:
    """``[part.part.TEXT]`` after BODY / BODY.PEEK (RFC 3501 6.4.5)."""
    r.open(b"[", "]", "'['")
    part: list[int] = []
    text = ""
    fields: tuple[bytes, ...] = ()
    if r.take(b"]"):
        r.closers.pop()
        return F.Section()
    while r.peek().isdigit():
        part.append(r.number(nonzero=True, what="a part number"))
        if not r.take(b"."):
            break
    if r.peek() != b"]":
        word = r.match(_SECTION_WORD)
        if word is None:
            r.expected("a section: a part number, HEADER, HEADER.FIELDS, TEXT or MIME")
        word_s = word.decode().upper()
        if word_s in ("HEADER", "TEXT") or (word_s == "MIME" and part):
            text = word_s
        elif word_s in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            text = word_s
            if not r.take(b" "):
                r.fail(f"{word_s} needs a list of header field names")
            fields = tuple(f.upper() if f.isascii() else f for f in r.paren_list(
                lambda: r.astring("a header field name"), allow_empty=False, what="a list of header field names"))
        else:
            r.fail(f"Invalid section {word_s[:30]}" + (" (MIME needs a part number)" if word_s == "MIME" else ""))
    r.close(b"]")
    return F.Section(tuple(part), text, fields)


def partial(r: Reader) -> tuple[int, int] | None:
    """``<origin.count>`` after a section, if there."""
    if r.peek() != b"<":
        return None
    m = r.match(_PARTIAL)
    if m is None or int(_PARTIAL.match(m).group(2)) == 0:
        r.fail("Invalid partial fetch: expected <offset.length> with a length above 0, e.g. <0.1024>")
    origin, count = (int(n) for n in _PARTIAL.match(m).groups())
    return origin, count


def _body(r: Reader, name: str) -> F.FetchItem:
    if r.peek() == b"[":
        sec = section(r)
        return F.BodySection(sec, name == "BODY.PEEK", partial(r))
    if name == "BODY":
        return F.BodyStructure(extended=False)
    r.fail(f"Unknown fetch attribute {name[:30]}")
    raise AssertionError


_SIMPLE = {"UID": F.Uid, "FLAGS": F.Flags, "INTERNALDATE": F.InternalDate, "RFC822.SIZE": F.Size,
           "ENVELOPE": F.Envelope}


@dataclass(frozen=True, kw_only=True)
class Fetch(Command):
    name = "FETCH"
    states = State.SELECTED
    uid_form = True
    usage = "{cmd} needs a {set} and the data items to fetch"
    timed = True

    set: SeqSet
    items: list[F.FetchItem]
    options: Options = field(default_factory=Options)

    @classmethod
    def parse(cls, r: Reader, p: Parse) -> "Fetch":
        reg = p.registry
        r.sp()
        seqset = r.seq_set()
        r.sp()
        if r.peek() == b"(":
            items = r.paren_list(lambda: item(r, reg), allow_empty=False, what="a list of fetch attributes")
        else:
            word = r.match(_MACRO)
            if word is not None and word.decode().upper() in MACROS:
                items = [item(Reader(n.encode()), reg) for n in MACROS[word.decode().upper()]]
            else:
                if word is not None:
                    r.pos -= len(word)
                items = [item(r, reg)]
        options = Options()
        if r.take(b" "):
            if r.at_end():
                r.fail("Missing FETCH modifiers after the space")
            if r.peek() != b"(":
                r.fail("Too many arguments (several fetch attributes go in parentheses: (FLAGS UID))")
            options = modifiers(r, reg.fetch_modifiers, "a FETCH modifier")
        return cls(tag=p.tag, uid=p.uid, set=seqset, items=items, options=options)

    def reports_expunges(self) -> bool:
        return self.uid

    async def run(self, s: "Session") -> Reply:
        from ..session import BadSet

        try:
            uids = s.resolve(self.set, self.uid)
        except BadSet:
            return bad("Error in IMAP command FETCH: Invalid messageset")
        table = s.registry.fetch_modifiers
        self.options.apply(s, table)
        for name, value in self.options.values.items():
            before = table[name].before
            if before is not None:
                await before(s, value, self, uids)
        keeps = [(table[n].keep, v) for n, v in self.options.values.items() if table[n].keep is not None]
        for it in self.items:
            it.prepare(s)
        for it in self.items:
            await it.preload(s, uids)
        view = s.view
        folder = view.folder
        marked: set[int] = set()
        if F.sets_seen(self.items) and not view.readonly:
            unseen = [u for u in uids if (m := folder.get(u)) is not None and "\\Seen" not in m.flags
                      and u not in view.pending_expunge]
            if unseen:
                changed, _ = await folder.store(unseen, ["\\Seen"], "add", origin=s)
                marked = {m.uid for m in changed}
        want_data = F.needs_data(self.items)
        want_structure = F.needs_structure(self.items)
        structures = await s.structures(folder, uids) if want_structure else {}
        fresh: dict[int, Structure] = {}
        wants_flags = any(isinstance(i, F.Flags) for i in self.items)
        first = [F.Uid()] if self.uid and not view.uidonly else []
        flags_item, modseq_item = F.Flags(), F.ModSeq()
        modseq_always = s.condstore and (wants_flags or bool(self.options.values))
        gone = False
        try:
            for uid in uids:
                msg = folder.get(uid)
                if msg is None:
                    gone = True
                    continue
                if keeps and not all(keep(msg, v) for keep, v in keeps):
                    continue
                structure = structures.get(uid) if want_structure else None
                loaded = None
                if want_data or (want_structure and structure is None):
                    try:
                        loaded = await s.load(folder, msg)
                    except MessageGone:
                        gone = True
                        continue
                    if want_structure and structure is None:
                        structure = fresh[uid] = structure_of(loaded.entity)
                last: list[F.FetchItem] = []
                if uid in marked:
                    last.append(flags_item)
                if s.condstore and (modseq_always or uid in marked):
                    last.append(modseq_item)
                data = F.render(F.Fetched(msg, loaded, uid in view.recent, structure), self.items, first, last)
                s.write(view.fetch_head(uid, with_uid=False)[:-1] + data + b"\r\n")
                if s.ch.pending() > FLUSH_AT:
                    await s.ch.flush()
        finally:
            if fresh:
                s.keep_structures(folder, fresh)
        if gone:
            return no("Some of the requested messages no longer exist.", "EXPUNGEISSUED")
        return ok("Fetch completed")


def register(registry: Registry) -> None:
    for name, cls in _SIMPLE.items():
        registry.fetch_item(name, lambda r, n, cls=cls: cls())
    registry.fetch_item("BODYSTRUCTURE", lambda r, n: F.BodyStructure(extended=True))
    registry.fetch_item("BODY", _body)
    registry.fetch_item("BODY.PEEK", _body)
    for name in ("RFC822", "RFC822.HEADER", "RFC822.TEXT"):
        registry.fetch_item(name, lambda r, n: F.Rfc822(n))
    registry.command(Fetch)

