"""QRESYNC (RFC 7162 section 3.2), on the CONDSTORE of :mod:`.condstore`.

- ``ENABLE QRESYNC`` (which enables CONDSTORE too); from then on the
  session hears of expunges as ``* VANISHED uid-set`` instead of EXPUNGE
  (its own EXPUNGE, UID EXPUNGE, MOVE, and other sessions' — also in IDLE).
- ``SELECT/EXAMINE mailbox (QRESYNC (uidvalidity modseq [known-uids
  [(known-sequence-set known-uid-set)]]))``: when the UIDVALIDITY is the
  folder's, the usual responses are followed by ``* VANISHED (EARLIER)``
  with the UIDs expunged since ``modseq`` (within ``known-uids``) and a
  ``FETCH (UID FLAGS MODSEQ)`` for every message changed since.
- ``UID FETCH set items (CHANGEDSINCE modseq VANISHED)``: the UIDs of the
  set expunged since, as ``* VANISHED (EARLIER)``, before the FETCHes.
- A SELECT over a selected mailbox says ``OK [CLOSED]`` first (3.2.11).

Expunges are remembered with their MODSEQ in the folder's index
(:meth:`~..backend.Folder.vanished_since`).  For an index made before that
record began, the server cannot tell which of the missing UIDs went after
the client's MODSEQ, so it reports every UID not in the folder (within the
set asked about, below UIDNEXT), as the RFC allows; with sequence-match
data, UIDs the client provably saw expunged are left out (3.2.5.2).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import responses as R
from ..reader import Reader, SeqSet
from ..states import Selected, SelectedView
from .base import Modifier, Refused, Registry, bad

if TYPE_CHECKING:
    from ..backend import Folder
    from ..session import Session

NAME = "QRESYNC"


def _on_enable(s: "Session") -> None:
    s.enable("CONDSTORE")
    if isinstance(s.state, Selected):
        s.state.view.vanished = True


def _setup(s: "Session", view: SelectedView) -> None:
    view.vanished = NAME in s.enabled


@dataclass(frozen=True)
class Params:
    uidvalidity: int
    modseq: int
    known_uids: SeqSet | None = None
    seq_match: tuple[SeqSet, SeqSet] | None = None


def _no_star(r: Reader, what: str) -> SeqSet:
    seqset = r.seq_set(what)
    if seqset.uses_star() or seqset.saved:
        r.fail(f"Invalid {what.removeprefix('a ')}: '*' is not allowed here")
    return seqset


def _parse(r: Reader) -> Params:
    r.open(b"(", ")", "'('")
    uidvalidity = r.number(nonzero=True, what="a UIDVALIDITY")
    r.sp("QRESYNC needs a UIDVALIDITY and a mod-sequence")
    modseq = r.number(what="a mod-sequence")
    known = match = None
    if r.take(b" "):
        if r.peek() != b"(":
            known = _no_star(r, "a UID set")
            if r.peek(2) == b" (":
                r.take(b" ")
        if r.peek() == b"(":
            r.open(b"(", ")", "'('")
            seqs = _no_star(r, "a message set")
            r.sp("Sequence-match data needs a message set and a UID set")
            uids = _no_star(r, "a UID set")
            r.close(b")")
            match = (seqs, uids)
    r.close(b")")
    return Params(uidvalidity, modseq, known, match)


def _require_enabled(s: "Session", _value: Any = None) -> None:
    if NAME not in s.enabled:
        raise Refused(bad("QRESYNC is not enabled (ENABLE QRESYNC first)"))


def _ranges(seqset: SeqSet) -> list[tuple[int, int]]:
    return seqset.bounds(2 ** 32)


def missing_uids(folder: "Folder", ranges: list[tuple[int, int]], present: list[int]) -> list[tuple[int, int]]:
    """The UID ranges within ``ranges`` (and below UIDNEXT) where no message
    is now: everything that could have been expunged, without listing it
    one by one."""
    out: list[tuple[int, int]] = []
    top = folder.uidnext - 1
    for lo, hi in ranges:
        hi = min(hi, top)
        if lo > hi:
            continue
        i = bisect.bisect_left(present, lo)
        cur = lo
        while cur <= hi:
            if i < len(present) and present[i] <= hi:
                if present[i] > cur:
                    out.append((cur, present[i] - 1))
                cur = present[i] + 1
                i += 1
            else:
                out.append((cur, hi))
                break
    return out


def _set_text(ranges: list[tuple[int, int]]) -> bytes:
    return b",".join(b"%d" % a if a == b else b"%d:%d" % (a, b) for a, b in ranges)


def _matched_below(view: SelectedView, match: tuple[SeqSet, SeqSet]) -> int:
    """RFC 7162 3.2.5.2: the highest UID of the client's (sequence number,
    UID) pairs that still match, going up from the first; the client saw
    every expunge below it already."""
    seqs, uids = match
    numbers = [n for a, b in _ranges(seqs) for n in range(a, min(b, a + 10_000) + 1)]
    ids = [n for a, b in _ranges(uids) for n in range(a, min(b, a + 10_000) + 1)]
    best = 0
    for seq, uid in zip(numbers, ids):
        if 0 < seq <= len(view.uids) and view.uids[seq - 1] == uid:
            best = uid
        else:
            break
    return best


async def vanished_earlier(folder: "Folder", modseq: int, ranges: list[tuple[int, int]],
                           present: list[int], below: int = 0) -> bytes | None:
    """``* VANISHED (EARLIER) ...`` for the UIDs in ``ranges`` expunged
    after ``modseq`` (None when there are none)."""
    gone, complete = await folder.vanished_since(modseq)
    if complete:
        chosen = [u for u in gone if u > below and any(a <= u <= b for a, b in ranges)]
        text = R.number_set(chosen)
    else:
        ranges = [(max(a, below + 1), b) for a, b in ranges if b > below]
        text = _set_text(missing_uids(folder, ranges, present))
    return R.untagged(b"VANISHED (EARLIER) " + text) if text else None


async def _after_select(s: "Session", params: Params, _cmd: Any) -> None:
    view = s.view
    folder = view.folder
    if params.uidvalidity != folder.uidvalidity:
        return
    ranges = _ranges(params.known_uids) if params.known_uids else [(1, 2 ** 32)]
    below = _matched_below(view, params.seq_match) if params.seq_match else 0
    line = await vanished_earlier(folder, params.modseq, ranges, view.uids, below)
    if line:
        s.write(line)
    for seq, uid in enumerate(view.uids, 1):
        msg = folder.get(uid)
        if msg is not None and msg.modseq > params.modseq:
            flags = msg.flags | {"\\Recent"} if uid in view.recent else msg.flags
            s.write(view.fetch_head(uid, with_uid=True) + b"FLAGS " + R.flag_list(flags)
                    + b" MODSEQ (%d))\r\n" % msg.modseq)
            await s.flush_if_large()


async def _before_fetch(s: "Session", _value: Any, cmd: Any, uids: list[int]) -> None:
    """UID FETCH ... (CHANGEDSINCE n VANISHED)."""
    if not cmd.uid:
        raise Refused(bad("VANISHED needs UID FETCH"))
    if "CHANGEDSINCE" not in cmd.options:
        raise Refused(bad("VANISHED needs CHANGEDSINCE"))
    _require_enabled(s)
    view = s.view
    largest = max(view.uids[-1] if view.uids else 0, view.folder.uidnext - 1)
    ranges = cmd.set.bounds(largest) if not cmd.set.saved else [(u, u) for u in sorted(view.saved)]
    line = await vanished_earlier(view.folder, cmd.options.get("CHANGEDSINCE"), ranges, view.uids)
    if line:
        s.write(line)


def register(registry: Registry) -> None:
    registry.capability(NAME)
    registry.enable(NAME, _on_enable)
    registry.view_setup.append(_setup)
    registry.report_closed = True
    registry.select_modifier(Modifier(NAME, parse=_parse, on_use=_require_enabled, after=_after_select))
    registry.fetch_modifier(Modifier("VANISHED", before=_before_fetch))
