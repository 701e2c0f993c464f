"""MOVE (RFC 6851): copy and expunge in one step, atomically per message;
``COPYUID`` comes first as an untagged OK, then the EXPUNGE responses.  A
move onto the selected folder itself is legal: the messages come back with
new UIDs (EXPUNGE, then EXISTS)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import responses as R
from .base import Registry, Reply, no, ok
from .copy import Copy, copyuid

if TYPE_CHECKING:
    from ..session import Session


@dataclass(frozen=True, kw_only=True)
class Move(Copy):
    name = "MOVE"
    capability = "MOVE"

    async def run(self, s: "Session") -> Reply:
        view = s.view
        if view.readonly:
            return no("Mailbox is read-only.", "READ-ONLY")
        found = await self.targets(s)
        if isinstance(found, Reply):
            return found
        _, live, dest = found
        pairs = await view.folder.move(live, dest, origin=s)
        code = copyuid(dest, pairs)
        if code:
            s.write(R.untagged(f"OK [{code}] Moved UIDs."))
        for line in view.remove([src for src, _ in pairs]):
            s.write(line)
        return ok("Move completed.")


def register(registry: Registry) -> None:
    registry.command(Move)
