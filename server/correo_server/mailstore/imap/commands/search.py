"""SEARCH (RFC 3501 6.4.4): the keys of RFC 3501, parsed into
:mod:`..search` keys; other modules register more (``registry.search_key``:
CONDSTORE's MODSEQ).  With CONDSTORE keys, the reply carries the highest
MODSEQ of the messages found (RFC 7162 3.1.5).

``SEARCH RETURN (...)`` (RFC 4466) takes the registry's result options
(ESEARCH's MIN/MAX/ALL/COUNT, SEARCHRES's SAVE); with any, or when a session
mode asks for it (IMAP4rev2), the registry's ``search_reply`` answers
instead of ``* SEARCH``.  :func:`matching` and :func:`answer` are shared
with SORT and THREAD."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .. import responses as R
from .. import search as S
from ..backend import MessageGone
from ..reader import MAX_NESTING, Reader, SeqSet
from .base import Command, Found, Options, Parse, Registry, Reply, State, modifiers, no, ok

if TYPE_CHECKING:
    from ..backend import MessageInfo
    from ..session import Session

_WORD = re.compile(rb"[A-Za-z]+")
SubKey = Callable[[], S.Key]


class KeyReader:
    """Reads search keys with the registry's key parsers."""

    def __init__(self, r: Reader, registry: Registry) -> None:
        self.r = r
        self.parsers = registry.search_keys
        self.depth = 0

    def key(self) -> S.Key:
        r = self.r
        self.depth += 1
        try:
            if self.depth > MAX_NESTING:
                r.fail("Search keys nested too deeply")
            if r.peek() == b"(":
                r.open(b"(", ")", "'('")
                keys = [self.key()]
                while r.take(b" "):
                    keys.append(self.key())
                r.close(b")")
                return S.And(tuple(keys))
            c = r.peek()
            if c == b"*" or c.isdigit() or (c == b"$" and r.saved_sets):
                return S.Seq(r.seq_set())
            word = r.match(_WORD)
            if word is None:
                r.expected("a search key")
            name = word.decode().upper()
            parser = self.parsers.get(name)
            if parser is None:
                if name == "CHARSET":
                    r.fail("CHARSET must come first")
                r.fail(f"Unknown search key {name[:30]}")
            return parser(r, name, self.key)
        finally:
            self.depth -= 1

    def keys(self) -> S.Key:
        keys = [self.key()]
        while self.r.take(b" "):
            keys.append(self.key())
        return keys[0] if len(keys) == 1 else S.And(tuple(keys))


@dataclass(frozen=True, kw_only=True)
class Search(Command):
    name = "SEARCH"
    states = State.SELECTED
    uid_form = True
    usage = "{cmd} needs search criteria"
    timed = True

    charset: str | None
    key: S.Key
    returns: Options | None = None  # RETURN (...) (RFC 4466); None: not given

    @classmethod
    def parse(cls, r: Reader, p: Parse) -> "Search":
        r.sp()
        returns = search_returns(r, p.registry)
        charset = None
        if r.take(b"CHARSET") and (r.at_end() or r.peek() == b" "):
            r.sp("CHARSET needs a charset name, then search criteria")
            charset = r.astring("a charset").decode("ascii", "replace")
            r.sp("SEARCH needs search criteria after the charset")
        elif r.buf[r.pos - 7:r.pos].upper() == b"CHARSET" and r.pos >= 7 and r.buf[r.pos - 8:r.pos - 7] == b" ":
            r.pos -= 7  # a key that only starts with CHARSET
        return cls(tag=p.tag, uid=p.uid, charset=charset, key=KeyReader(r, p.registry).keys(), returns=returns)

    def reports_expunges(self) -> bool:
        return self.uid

    async def run(self, s: "Session") -> Reply:
        if not S.charset_supported(self.charset):
            if self.returns is not None and "SAVE" in self.returns:
                s.view.saved = frozenset()  # RFC 5182 2.1: a failed SEARCH ... SAVE empties "$"
            return no("Unsupported charset.", "BADCHARSET (US-ASCII UTF-8)")
        modseq = uses_modseq(s, self.key)
        msgs = await matching(s, self.key)
        found = Found(self.tag, self.uid, [m.uid for _, m in msgs],
                      [m.uid if self.uid else seq for seq, m in msgs], [m.modseq for _, m in msgs], modseq,
                      key=self.key)
        answer(s, found, self.returns, b"SEARCH")
        return ok("Search completed")


def search_returns(r: Reader, registry: Registry) -> Options | None:
    """``RETURN (option ...) `` before the search keys, if there (the
    reader is after the space that ends the command name)."""
    if not registry.search_returns or not r.take(b"RETURN "):
        return None
    returns = modifiers(r, registry.search_returns, "a SEARCH return option", allow_empty=True)
    r.sp("Missing search criteria after RETURN (...)")
    return returns


def uses_modseq(s: "Session", key: S.Key) -> bool:
    """A MODSEQ key switches CONDSTORE on (RFC 7162 3.1)."""
    modseq = any(isinstance(k, S.ModSeq) for k in key.walk())
    if modseq:
        s.enable("CONDSTORE")
    return modseq


async def matching(s: "Session", key: S.Key) -> list[tuple[int, "MessageInfo"]]:
    """(sequence number, message) of each message of the selected folder
    the key matches, in UID order; message content is read only when a key
    needs it."""
    from ..summaries import SUMMARIES

    view = s.view
    folder = view.folder
    content = S.any_needs_content(key)
    summaries = {}
    if any(k.needs_summary for k in key.walk()):
        summaries = await SUMMARIES.get(s.backend.cache_key(s.mailbox), folder, view.uids)
    uids = list(view.uids)
    get = folder.get
    if isinstance(key, S.All):  # SORT and THREAD of a whole folder: nothing to test
        return [(seq, msg) for seq, uid in enumerate(uids, 1) if (msg := get(uid)) is not None]
    found = []
    largest_uid = uids[-1] if uids else 0
    recent = view.recent
    if not content:  # one candidate, refilled: no allocation per message
        cand = S.Candidate(None, 0, False, len(uids), largest_uid, saved=view.saved)  # type: ignore[arg-type]
        for seq, uid in enumerate(uids, 1):
            msg = get(uid)
            if msg is None:
                continue
            cand.msg, cand.seq, cand.recent, cand.summary = msg, seq, uid in recent, summaries.get(uid)
            if key.matches(cand):
                found.append((seq, msg))
        return found
    for seq, uid in enumerate(uids, 1):
        msg = get(uid)
        if msg is None:
            continue
        cand = S.Candidate(msg, seq, uid in recent, len(uids), largest_uid, saved=view.saved,
                           summary=summaries.get(uid))
        try:
            cand.data = (await s.load(folder, msg)).data
        except MessageGone:
            continue
        if key.matches(cand):
            found.append((seq, msg))
    return found


def answer(s: "Session", found: Found, returns: Options | None, name: bytes) -> None:
    """The untagged reply: ``* SEARCH n n ...`` (or ``* SORT``), or with
    result options the registry's ``search_reply`` (ESEARCH) after the
    options' own work (SAVE).  A session mode may ask for result options
    on every SEARCH (IMAP4rev2), not on SORT."""
    registry = s.registry
    if returns is None and name == b"SEARCH":
        for default in registry.search_defaults:
            returns = default(s)
            if returns is not None:
                break
    if returns is None or registry.search_reply is None:
        line = name + b"".join(b" %d" % n for n in found.numbers)
        if found.modseq and found.numbers:
            line += b" (MODSEQ %d)" % max(found.modseqs)
        s.write(R.untagged(line))
        return
    for opt_name in returns.values:
        hook = registry.search_returns[opt_name].on_result
        if hook is not None:
            hook(s, found, returns)
    registry.search_reply(s, found, returns)


# -- RFC 3501's keys ------------------------------------------------------------------

_FLAGS = {"ANSWERED": "\\Answered", "DELETED": "\\Deleted", "DRAFT": "\\Draft", "FLAGGED": "\\Flagged",
          "SEEN": "\\Seen"}
_DATES = ("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE")
_TEXTS = ("BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO")


def _flag(r: Reader, name: str, sub: SubKey) -> S.Key:
    if name.startswith("UN"):
        return S.Flag(_FLAGS[name[2:]], present=False)
    return S.Flag(_FLAGS[name])


def _recent(r: Reader, name: str, sub: SubKey) -> S.Key:
    return S.Recent(name.lower())


def _all(r: Reader, name: str, sub: SubKey) -> S.Key:
    return S.All()


def _text(r: Reader, name: str, sub: SubKey) -> S.Key:
    r.sp(f"{name} needs a search string")
    return S.Text(name.lower(), S.needle(r.astring("a search string")))


def _header(r: Reader, name: str, sub: SubKey) -> S.Key:
    r.sp("HEADER needs a header field name and a search string")
    field_name = r.astring("a header field name")
    r.sp("HEADER needs a header field name and a search string")
    return S.Header(field_name.decode("ascii", "replace"), S.needle(r.astring("a search string")))


def _date(r: Reader, name: str, sub: SubKey) -> S.Key:
    r.sp(f"{name} needs a date such as 1-Feb-2024")
    return S.Date(name.lower(), r.date())


def _keyword(r: Reader, name: str, sub: SubKey) -> S.Key:
    r.sp(f"{name} needs a keyword")
    return S.Flag(r.atom("a keyword"), present=name == "KEYWORD")


def _size(r: Reader, name: str, sub: SubKey) -> S.Key:
    r.sp(f"{name} needs a size in octets")
    return S.Size(name == "LARGER", r.number(what="a size in octets"))


def _not(r: Reader, name: str, sub: SubKey) -> S.Key:
    r.sp("NOT needs a search key")
    return S.Not(sub())


def _or(r: Reader, name: str, sub: SubKey) -> S.Key:
    r.sp("OR needs two search keys")
    a = sub()
    r.sp("OR needs two search keys")
    return S.Or(a, sub())


def _uid(r: Reader, name: str, sub: SubKey) -> S.Key:
    r.sp("UID needs a UID set")
    return S.Uid(r.seq_set("a UID set"))


def register(registry: Registry) -> None:
    for name in _FLAGS:
        registry.search_key(name, _flag)
        registry.search_key("UN" + name, _flag)
    for name in ("RECENT", "NEW", "OLD"):
        registry.search_key(name, _recent)
    registry.search_key("ALL", _all)
    for name in _TEXTS:
        registry.search_key(name, _text)
    registry.search_key("HEADER", _header)
    for name in _DATES:
        registry.search_key(name, _date)
    for name in ("KEYWORD", "UNKEYWORD"):
        registry.search_key(name, _keyword)
    for name in ("LARGER", "SMALLER"):
        registry.search_key(name, _size)
    registry.search_key("NOT", _not)
    registry.search_key("OR", _or)
    registry.search_key("UID", _uid)
    registry.command(Search)


__all__ = ["KeyReader", "Search", "SeqSet", "answer", "matching", "search_returns", "uses_modseq"]
