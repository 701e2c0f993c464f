"""PARTIAL (RFC 9394, and CONTEXT=SEARCH's PARTIAL of RFC 5267): a page of
a result instead of all of it — what a client showing the newest fifty
messages of a folder of a hundred thousand asks for.

- ``SEARCH RETURN (PARTIAL 1:50) ...``: the 1st to 50th messages found, in
  ascending order; ``PARTIAL (-1:-50)``: the last fifty (``-1`` is the
  last).  Answer: ``* ESEARCH (TAG "t") UID PARTIAL (-1:-50 9951:10000)``,
  ``NIL`` for none.  A range is normalised (``4:2`` is ``2:4``,
  ``-50:-1`` is ``-1:-50``); both ends have the same sign.
- ``UID FETCH 1:* (FLAGS) (PARTIAL -1:-50)``: only those messages of the
  set (counted among the ones the command's other modifiers keep, e.g.
  CHANGEDSINCE) are fetched.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .. import responses as R
from ..reader import Reader
from .base import Found, Modifier, Registry, SearchReturn

if TYPE_CHECKING:
    from ..session import Session

NAME = "PARTIAL"
_RANGE = re.compile(rb"(-?)([1-9][0-9]{0,9}):(-?)([1-9][0-9]{0,9})")


def parse_range(r: Reader) -> tuple[int, int]:
    """``m:n`` or ``-m:-n``, as (first, last): (2, 4) or (-1, -50)."""
    m = r.match(_RANGE)
    if m is None:
        r.expected("a range of positions such as 1:100 or -1:-100")
    neg_a, a, neg_b, b = _RANGE.fullmatch(m).groups()
    if neg_a != neg_b:
        r.fail("Both ends of a PARTIAL range are counted from the same end: 1:100 or -1:-100")
    lo, hi = sorted((int(a), int(b)))
    return (-lo, -hi) if neg_a else (lo, hi)


def pick(items: list, rng: tuple[int, int]) -> list:
    """The items at those positions (1 is the first, -1 the last), in order."""
    first, last = rng
    if first > 0:
        return items[first - 1:last]
    n = len(items)
    start, stop = max(n + last, 0), n + first + 1
    return items[start:stop] if stop > 0 else []


def _spec(rng: tuple[int, int]) -> bytes:
    return b"%d:%d" % rng


def _render(found: Found, rng: tuple[int, int]) -> bytes:
    picked = pick(found.numbers, rng)
    return b"PARTIAL (" + _spec(rng) + b" " + (R.number_set(sorted(picked)) if picked else b"NIL") + b")"


async def _restrict(s: "Session", rng: tuple[int, int], cmd: Any, uids: list[int]) -> None:
    """FETCH: keep in ``uids`` (in place: the command fetches that list)
    only the messages in the range, counted among those the other
    modifiers keep."""
    table = s.registry.fetch_modifiers
    keeps = [(table[n].keep, v) for n, v in cmd.options.values.items() if n != NAME and table[n].keep is not None]
    folder = s.view.folder
    candidates = [u for u in uids
                  if not keeps or ((m := folder.get(u)) is not None and all(k(m, v) for k, v in keeps))]
    uids[:] = pick(candidates, rng)


def register(registry: Registry) -> None:
    registry.capability(NAME)
    registry.search_return(SearchReturn(NAME, parse=parse_range, render=_render))
    registry.fetch_modifier(Modifier(NAME, parse=parse_range, before=_restrict))
