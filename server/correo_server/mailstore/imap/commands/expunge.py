"""EXPUNGE (RFC 3501 6.4.3) and UID EXPUNGE (UIDPLUS, RFC 4315: only the
given UIDs).  UIDPLUS's APPENDUID and COPYUID codes are answered by APPEND,
COPY and MOVE."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..reader import Reader, SeqSet
from .base import Command, Parse, Registry, Reply, State, no, ok

if TYPE_CHECKING:
    from ..session import Session


@dataclass(frozen=True, kw_only=True)
class Expunge(Command):
    name = "EXPUNGE"
    states = State.SELECTED
    uid_form = True
    usage = "{cmd} needs a {set}"

    set: SeqSet | None  # UID EXPUNGE's UIDs

    @classmethod
    def parse(cls, r: Reader, p: Parse) -> "Expunge":
        """EXPUNGE takes nothing (anything after it is too many arguments);
        UID EXPUNGE takes a UID set."""
        if not p.uid:
            return cls(tag=p.tag, set=None)
        r.sp()
        return cls(tag=p.tag, uid=True, set=r.seq_set("a UID set"))

    async def run(self, s: "Session") -> Reply:
        view = s.view
        if view.readonly:
            return no("Mailbox is read-only.", "READ-ONLY")
        candidates = view.uids if self.set is None else view.resolve(self.set, uid=True)
        doomed = [u for u in candidates if (m := view.folder.get(u)) is not None and "\\Deleted" in m.flags]
        gone = await view.folder.expunge(doomed, origin=s) if doomed else []
        for line in view.remove(gone):
            s.write(line)
        code = f"HIGHESTMODSEQ {view.folder.highestmodseq}" if s.condstore else None  # RFC 7162 3.2.10
        return ok("Expunge completed.", code)


def register(registry: Registry) -> None:
    registry.capability("UIDPLUS")
    registry.command(Expunge)
