"""SEARCHRES (RFC 5182): ``SEARCH RETURN (SAVE) ...`` keeps the result in
the session, and ``$`` stands for it wherever a sequence set may go (FETCH,
STORE, COPY, MOVE, UID EXPUNGE, SEARCH keys), in either numbering.

The saved result is a set of UIDs on the selected view
(:attr:`..states.SelectedView.saved`): it is empty after SELECT and
EXAMINE, loses messages as they are expunged, and is emptied by a SEARCH
with SAVE that fails.  ``SAVE`` with MIN and/or MAX (and not ALL or COUNT)
keeps only those messages (RFC 5182 2.1).  SAVE alone gives no ESEARCH
response.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Found, Options, Registry, SearchReturn

if TYPE_CHECKING:
    from ..session import Session

NAME = "SEARCHRES"


def save(s: "Session", found: Found, returns: Options) -> None:
    names = set(returns.values) - {"SAVE"}
    uids = found.uids
    if uids and names and names <= {"MIN", "MAX"}:
        picks = set()
        if "MIN" in names:
            picks.add(found.uids[found.numbers.index(min(found.numbers))])
        if "MAX" in names:
            picks.add(found.uids[found.numbers.index(max(found.numbers))])
        uids = sorted(picks)
    s.view.saved = frozenset(uids)


def register(registry: Registry) -> None:
    registry.capability(NAME)
    registry.search_return(SearchReturn("SAVE", on_result=save))
    registry.saved_sets = True
