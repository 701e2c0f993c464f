"""CHECK and CLOSE (RFC 3501 6.4.1-2).  CLOSE expunges \\Deleted messages
silently (unless the folder is read-only) and leaves the selected state."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import Command, Registry, Reply, State, ok

if TYPE_CHECKING:
    from ..session import Session


@dataclass(frozen=True, kw_only=True)
class Check(Command):
    name = "CHECK"
    states = State.SELECTED

    async def run(self, s: "Session") -> Reply:
        return ok("Check completed.")


@dataclass(frozen=True, kw_only=True)
class Close(Command):
    name = "CLOSE"
    states = State.SELECTED

    async def run(self, s: "Session") -> Reply:
        view = s.view
        if not view.readonly:
            doomed = [u for u in view.uids if (m := view.folder.get(u)) is not None and "\\Deleted" in m.flags]
            if doomed:
                await view.folder.expunge(doomed, origin=s)
        s.leave_selected()
        return ok("Close completed.")


def register(registry: Registry) -> None:
    registry.command(Check)
    registry.command(Close)
