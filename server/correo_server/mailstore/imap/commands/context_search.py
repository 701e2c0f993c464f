"""CONTEXT=SEARCH (RFC 5267): two more SEARCH result options, for clients
that page through a large folder and keep a search on screen.

``PARTIAL m:n`` answers only the m-th to n-th messages of the result:
``* ESEARCH (TAG "t") PARTIAL (2:4 17,19:20)``.  That option is
:mod:`.partial`'s, which has RFC 9394's form of it too (``-1:-100``, from
the end) and the same range for FETCH.

``UPDATE`` keeps the search running while the folder stays selected: when
messages start or stop matching — another session's flag change, new
mail, this session's own STORE or APPEND, an expunge — the server says so,
unasked, with ``* ESEARCH (TAG "t") [UID] ADDTO (position set)`` and
``REMOVEFROM (position set)`` (position: where in the ascending result the
first of them is or was).  A REMOVEFROM for expunged messages comes
before the EXPUNGE responses, while their numbers still hold.
``CANCELUPDATE "t" ...`` stops them; SELECT, EXAMINE, CLOSE and UNSELECT
end them all.  A session keeps at most :data:`MAX_UPDATES` at once (more:
``NO [NOUPDATE "t"]``).

How: the kept searches live on the selected view (so they end with it).
After each command's (and IDLE's) updates (``registry.after_sync``) each
one is run again when the folder changed since its last run (highest
MODSEQ, message count, highest UID) and compared with its last result;
the view's ``on_remove`` hook gives the REMOVEFROM of expunges.  CONTEXT=SORT
(SORT RETURN (UPDATE)) is not offered: Dovecot does not offer it either.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import responses as R
from ..reader import Reader
from ..states import Selected, SelectedView
from .base import Command, Found, Options, Parse, Refused, Registry, Reply, SearchReturn, State, bad, no, ok
from .search import matching

if TYPE_CHECKING:
    from ..session import Session

NAME = "CONTEXT=SEARCH"
MAX_UPDATES = 10


# -- UPDATE ------------------------------------------------------------------------

@dataclass
class Kept:
    """A search kept up to date: its key and the UIDs it matched last."""

    tag: str
    uid: bool
    key: Any
    members: set[int]
    seen: tuple[int, int, int]

    def line(self, view: SelectedView, word: bytes, uids: list[int], result: list[int]) -> bytes:
        """``ADDTO``/``REMOVEFROM`` (position set) for these UIDs; ``result``:
        the ascending result they are (or were) in."""
        numbers = uids if self.uid else [view.seq_of(u) or 0 for u in uids]
        position = result.index(uids[0]) + 1
        head = b"ESEARCH (TAG " + R.quoted(self.tag.encode()) + b")" + (b" UID" if self.uid else b"")
        return R.untagged(head + b" %s (%d %s)" % (word, position, R.number_set(numbers)))


def _kept(view: SelectedView) -> dict[str, Kept]:
    kept = getattr(view, "context_updates", None)
    if kept is None:
        kept = view.context_updates = {}  # type: ignore[attr-defined]
        view.on_remove.append(_removing)
    return kept


def _state(view: SelectedView) -> tuple[int, int, int]:
    return (view.folder.highestmodseq, view.highest_uid, len(view.uids))


def _keep(s: "Session", found: Found, returns: Options) -> None:
    if found.key is None or found.sorted:
        raise Refused(bad("UPDATE is a SEARCH return option (CONTEXT=SORT is not offered)"))
    kept = _kept(s.view)
    if found.tag not in kept and len(kept) >= MAX_UPDATES:
        raise Refused(no(f"At most {MAX_UPDATES} searches are kept up to date at once; CANCELUPDATE one",
                         f"NOUPDATE {R.quoted(found.tag.encode()).decode()}"))
    kept[found.tag] = Kept(found.tag, found.uid, found.key, set(found.uids), _state(s.view))


def _removing(view: SelectedView, uids: list[int]) -> list[bytes]:
    out = []
    for k in getattr(view, "context_updates", {}).values():
        gone = sorted(u for u in uids if u in k.members)
        if gone:
            out.append(k.line(view, b"REMOVEFROM", gone, sorted(k.members)))
            k.members -= set(gone)
    return out


async def _after_sync(s: "Session") -> None:
    if not isinstance(s.state, Selected):
        return
    view = s.view
    kept = getattr(view, "context_updates", None)
    if not kept:
        return
    now = _state(view)
    for k in list(kept.values()):
        if k.seen == now or k.tag not in kept:
            continue
        k.seen = now
        found = {m.uid for _, m in await matching(s, k.key)}
        in_view = set(view.uids)
        pending = view.pending_expunge
        removed = sorted(u for u in k.members if u not in found and u not in pending)
        added = sorted(u for u in found - k.members if u in in_view)
        if removed:
            s.write(k.line(view, b"REMOVEFROM", removed, sorted(k.members)))
            k.members -= set(removed)
        if added:
            k.members |= set(added)
            s.write(k.line(view, b"ADDTO", added, sorted(k.members)))


@dataclass(frozen=True, kw_only=True)
class CancelUpdate(Command):
    name = "CANCELUPDATE"
    states = State.SELECTED
    usage = "{cmd} needs the tags of the searches to stop updating"

    tags: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, r: Reader, p: Parse) -> "CancelUpdate":
        tags = []
        while r.take(b" "):
            tags.append(r.string("a quoted tag").decode("utf-8", "replace"))
        if not tags:
            r.fail_usage("CANCELUPDATE needs the tags of the searches to stop updating")
        return cls(tag=p.tag, tags=tags)

    async def run(self, s: "Session") -> Reply:
        kept = _kept(s.view)
        unknown = [t for t in self.tags if t not in kept]
        if unknown:
            return bad(f"No search is kept up to date with tag {unknown[0][:40]}")
        for t in self.tags:
            del kept[t]
        return ok("Updates cancelled.")


def register(registry: Registry) -> None:
    registry.capability(NAME)
    registry.search_return(SearchReturn("UPDATE", render=lambda found, value: None, on_result=_keep))
    registry.after_sync.append(_after_sync)
    registry.command(CancelUpdate)
