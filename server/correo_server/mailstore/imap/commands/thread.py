"""THREAD (RFC 5256 sections 3-4): ``THREAD algorithm charset search-keys``
and ``UID THREAD``, with the ORDEREDSUBJECT and REFERENCES algorithms
(:mod:`..threads`) over the messages the search finds, answered as
``* THREAD (1 2)(3 (4)(5))``.  Header fields come from the folder's
summaries (:mod:`..summaries`), as for SORT."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import responses as R
from .. import search as S
from .. import threads as T
from ..reader import Reader
from ..summaries import SUMMARIES
from .base import Command, Parse, Registry, Reply, State, no, ok
from .search import matching
from .sort import charset_and_keys, sent_date

if TYPE_CHECKING:
    from ..session import Session

ALGORITHMS = {"ORDEREDSUBJECT": T.ordered_subject, "REFERENCES": T.references}


@dataclass(frozen=True, kw_only=True)
class Thread(Command):
    name = "THREAD"
    states = State.SELECTED
    uid_form = True
    usage = "{cmd} needs an algorithm, a charset and search criteria"
    timed = True

    algorithm: str
    charset: str
    key: S.Key

    @classmethod
    def parse(cls, r: Reader, p: Parse) -> "Thread":
        r.sp()
        algorithm = r.atom("a threading algorithm").upper()
        if algorithm not in ALGORITHMS:
            r.fail(f"Unknown threading algorithm {algorithm[:40]} (ORDEREDSUBJECT or REFERENCES)")
        r.sp()
        charset, key = charset_and_keys(r, p)
        return cls(tag=p.tag, uid=p.uid, algorithm=algorithm, charset=charset, key=key)

    def reports_expunges(self) -> bool:
        return self.uid

    async def run(self, s: "Session") -> Reply:
        if not S.charset_supported(self.charset):
            return no("Unsupported charset.", "BADCHARSET (US-ASCII UTF-8)")
        found = await matching(s, self.key)
        summaries = await SUMMARIES.get(s.backend.cache_key(s.mailbox), s.view.folder, [m.uid for _, m in found])
        items = [T.Item(m.uid if self.uid else seq, seq, sent_date(m, summaries[m.uid]), summaries[m.uid])
                 for seq, m in found if m.uid in summaries]
        roots = ALGORITHMS[self.algorithm](items)
        s.write(R.untagged(b"THREAD " + T.render(roots) if roots else b"THREAD"))
        return ok("Thread completed")


def register(registry: Registry) -> None:
    for name in ALGORITHMS:
        registry.capability("THREAD=" + name)
    registry.command(Thread)
