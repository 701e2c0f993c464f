"""SORT (RFC 5256 section 3): ``SORT (criteria) charset search-keys`` and
``UID SORT``: the messages a search finds, in the order of the criteria —
ARRIVAL (internal date), CC, DATE (sent date, else the internal date), FROM,
SIZE, SUBJECT (base subject), TO, each possibly REVERSE — with ties in
mailbox order.  Text compares under i;unicode-casemap (:mod:`..summary`).

The header fields come from the folder's summaries (:mod:`..summaries`),
made once per message and kept in the index, so sorting 10,000 messages
reads no message after the first time and costs a Python sort.  More
criteria come from the registry (``registry.sort_key``: SORT=DISPLAY's),
and with ESORT (RFC 5267) ``SORT RETURN (...)`` answers in ESEARCH form.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import search as S
from ..reader import Reader
from ..summaries import SUMMARIES
from ..summary import Summary
from .base import Command, Found, Options, Parse, Registry, Reply, SortKey, State, no, ok
from .search import KeyReader, answer, matching, search_returns, uses_modseq

if TYPE_CHECKING:
    from ..backend import MessageInfo
    from ..session import Session


def sent_date(msg: "MessageInfo", summary: Summary | None) -> float:
    """RFC 5256 2.2: the Date: field, else the internal date."""
    if summary is not None and summary.date is not None:
        return summary.date
    return float(int(msg.internaldate))  # INTERNALDATE has whole seconds


def charset_and_keys(r: Reader, p: Parse) -> tuple[str, S.Key]:
    """``charset SP search-program`` (SORT and THREAD: the charset is required)."""
    charset = r.astring("a charset").decode("ascii", "replace")
    r.sp("Missing search criteria after the charset")
    return charset, KeyReader(r, p.registry).keys()


@dataclass(frozen=True, kw_only=True)
class Sort(Command):
    name = "SORT"
    states = State.SELECTED
    capability = "SORT"
    uid_form = True
    usage = "{cmd} needs sort criteria, a charset and search criteria"
    timed = True

    criteria: list[tuple[str, bool]]  # (criterion, reverse)
    charset: str
    key: S.Key
    returns: Options | None = None

    @classmethod
    def parse(cls, r: Reader, p: Parse) -> "Sort":
        r.sp()
        returns = search_returns(r, p.registry) if p.registry.sort_returns else None
        criteria: list[tuple[str, bool]] = []

        def criterion() -> None:
            word = r.atom("a sort criterion").upper()
            reverse = word == "REVERSE"
            if reverse:
                r.sp("REVERSE needs a sort criterion after it")
                word = r.atom("a sort criterion").upper()
            if word not in p.registry.sort_keys:
                r.fail(f"Unknown sort criterion {word[:40]}")
            criteria.append((word, reverse))

        r.paren_list(criterion, allow_empty=False, what="a list of sort criteria")
        r.sp()
        charset, key = charset_and_keys(r, p)
        return cls(tag=p.tag, uid=p.uid, criteria=criteria, charset=charset, key=key, returns=returns)

    def reports_expunges(self) -> bool:
        return self.uid

    async def run(self, s: "Session") -> Reply:
        if not S.charset_supported(self.charset):
            return no("Unsupported charset.", "BADCHARSET (US-ASCII UTF-8)")
        modseq = uses_modseq(s, self.key)
        found = await matching(s, self.key)
        table = s.registry.sort_keys
        summaries: dict[int, Summary] = {}
        if any(table[c].needs_summary for c, _ in self.criteria):
            summaries = await SUMMARIES.get(s.backend.cache_key(s.mailbox), s.view.folder,
                                            [m.uid for _, m in found])
        order = list(found)  # mailbox order: the last tie-break
        for name, reverse in reversed(self.criteria):
            fn = table[name].key
            order.sort(key=lambda sm: fn(sm[1], summaries.get(sm[1].uid)), reverse=reverse)
        result = Found(self.tag, self.uid, [m.uid for _, m in order],
                       [m.uid if self.uid else seq for seq, m in order], [m.modseq for _, m in order], modseq,
                       sorted=True)
        answer(s, result, self.returns, b"SORT")
        return ok("Sort completed")


def _text(attr: str):
    return lambda msg, summary: getattr(summary, attr) if summary is not None else ""


_KEYS = [
    SortKey("ARRIVAL", lambda msg, summary: int(msg.internaldate), needs_summary=False),
    SortKey("CC", _text("cc")),
    SortKey("DATE", sent_date),
    SortKey("FROM", _text("from_")),
    SortKey("SIZE", lambda msg, summary: msg.size, needs_summary=False),
    SortKey("SUBJECT", _text("subject")),
    SortKey("TO", _text("to")),
]


def register(registry: Registry) -> None:
    for key in _KEYS:
        registry.sort_key(key)
    registry.command(Sort)
