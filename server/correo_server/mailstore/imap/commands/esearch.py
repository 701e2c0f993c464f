"""ESEARCH (RFC 4731): ``SEARCH RETURN (MIN MAX ALL COUNT) ...`` and the
``* ESEARCH`` response.

The result options are registered with the SEARCH command
(``registry.search_return``), and :func:`reply` is the registry's
``search_reply``: it writes ``* ESEARCH (TAG "t") [UID] MIN 1 MAX 9 ALL
1:3,9 COUNT 4`` for any command using ``RETURN`` (SEARCH here, SORT in
:mod:`.sort`), and for every SEARCH once IMAP4rev2 is enabled
(:mod:`.imap4rev2`).  ``RETURN ()`` means ``RETURN (ALL)``; MIN, MAX and
ALL say nothing when no message matched, COUNT says 0.  With a MODSEQ
search key (CONDSTORE), the response ends with the highest MODSEQ of the
messages it reports (RFC 7162 3.1.5: MIN and MAX alone report just those).
Options that only act (SEARCHRES's SAVE) leave no response of their own.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import responses as R
from .base import Found, Options, Registry, SearchReturn

if TYPE_CHECKING:
    from ..session import Session

NAME = "ESEARCH"


def _min(found: Found, _v: Any) -> bytes | None:
    return b"MIN %d" % min(found.numbers) if found.numbers else None


def _max(found: Found, _v: Any) -> bytes | None:
    return b"MAX %d" % max(found.numbers) if found.numbers else None


def _all(found: Found, _v: Any) -> bytes | None:
    if not found.numbers:
        return None
    if found.sorted:  # ESORT (RFC 5267 3.1): the order is the answer; ranges only where it ascends by one
        return b"ALL " + sorted_set(found.numbers)
    return b"ALL " + R.number_set(found.numbers)


def sorted_set(numbers: list[int]) -> bytes:
    """``3:5,1,9`` for 3 4 5 1 9: the order kept, runs of n, n+1, ... as ranges."""
    out = []
    i = 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        out.append(b"%d" % numbers[i] if i == j else b"%d:%d" % (numbers[i], numbers[j]))
        i = j + 1
    return b",".join(out)


def _count(found: Found, _v: Any) -> bytes | None:
    return b"COUNT %d" % len(found.numbers)


_OPTIONS = {"MIN": _min, "MAX": _max, "ALL": _all, "COUNT": _count}


def reported_modseq(found: Found, shown: list[str]) -> int | None:
    """The MODSEQ an ESEARCH response carries: the highest of the messages
    it reports (all of them for ALL or COUNT, else the MIN/MAX ones)."""
    if not found.modseq or not found.numbers:
        return None
    if "ALL" in shown or "COUNT" in shown:
        return max(found.modseqs)
    picks = set()
    if "MIN" in shown:
        picks.add(found.numbers.index(min(found.numbers)))
    if "MAX" in shown:
        picks.add(found.numbers.index(max(found.numbers)))
    return max((found.modseqs[i] for i in picks), default=None)


def line(s: "Session", found: Found, returns: Options) -> bytes | None:
    """The ``* ESEARCH`` response for these options (None: nothing to say)."""
    table = s.registry.search_returns
    shown = [n for n in returns.values if table[n].render is not None]
    if not returns.values:
        shown = ["ALL"]
    elif not shown:
        return None  # only SAVE: RFC 5182 2.1, no ESEARCH response
    parts = [b"ESEARCH (TAG " + R.quoted(found.tag.encode()) + b")"]
    if found.uid:
        parts.append(b"UID")
    for name in shown:
        value = table[name].render(found, returns.get(name))  # type: ignore[misc]
        if value is not None:
            parts.append(value)
    modseq = reported_modseq(found, shown)
    if modseq is not None:
        parts.append(b"MODSEQ %d" % modseq)
    return R.untagged(b" ".join(parts))


def reply(s: "Session", found: Found, returns: Options) -> None:
    out = line(s, found, returns)
    if out is not None:
        s.write(out)


def register(registry: Registry) -> None:
    registry.capability(NAME)
    for name, render in _OPTIONS.items():
        registry.search_return(SearchReturn(name, render=render))
    registry.search_reply = reply
