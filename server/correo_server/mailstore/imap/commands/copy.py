"""COPY (RFC 3501 6.4.7), answering ``COPYUID`` (UIDPLUS, RFC 4315); a
missing destination is ``NO [TRYCREATE]``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import responses as R
from ..backend import NoSuchFolder
from ..reader import Reader, SeqSet
from .base import Command, Parse, Registry, Reply, State, bad, no, ok

if TYPE_CHECKING:
    from ..backend import Folder
    from ..session import Session


def copyuid(dest: "Folder", pairs: list[tuple[int, int]]) -> str | None:
    if not pairs:
        return None
    src = R.number_set(p[0] for p in pairs).decode()
    dst = R.number_set(p[1] for p in pairs).decode()
    return f"COPYUID {dest.uidvalidity} {src} {dst}"


@dataclass(frozen=True, kw_only=True)
class Copy(Command):
    name = "COPY"
    states = State.SELECTED
    uid_form = True
    usage = "{cmd} needs a {set} and a mailbox name"

    set: SeqSet
    mailbox: str

    @classmethod
    def parse(cls, r: Reader, p: Parse) -> "Copy":
        r.sp()
        seqset = r.seq_set()
        r.sp()
        return cls(tag=p.tag, uid=p.uid, set=seqset, mailbox=r.mailbox())

    async def targets(self, s: "Session") -> "tuple[list[int], list[int], Folder] | Reply":
        """(UIDs named, UIDs still there, destination) or the reply refusing."""
        from ..session import BadSet

        try:
            uids = s.resolve(self.set, self.uid)
        except BadSet:
            return bad(f"Error in IMAP command {self.name}: Invalid messageset")
        try:
            dest = await s.mailbox.folder(self.mailbox)
        except NoSuchFolder:
            return no("Mailbox doesn't exist", "TRYCREATE")
        view = s.view
        live = [u for u in uids if view.folder.get(u) is not None and u not in view.pending_expunge]
        return uids, live, dest

    async def run(self, s: "Session") -> Reply:
        found = await self.targets(s)
        if isinstance(found, Reply):
            return found
        uids, live, dest = found
        pairs = await s.view.folder.copy(live, dest)
        if len(live) < len(uids) and not pairs and uids:
            return no("Some of the requested messages no longer exist.", "EXPUNGEISSUED")
        return ok("Copy completed.", copyuid(dest, pairs))


def register(registry: Registry) -> None:
    registry.command(Copy)
