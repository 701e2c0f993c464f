"""UNSELECT (RFC 3691): leave the selected state without expunging."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import Command, Registry, Reply, State, ok

if TYPE_CHECKING:
    from ..session import Session


@dataclass(frozen=True, kw_only=True)
class Unselect(Command):
    name = "UNSELECT"
    states = State.SELECTED
    capability = "UNSELECT"

    async def run(self, s: "Session") -> Reply:
        s.leave_selected()
        return ok("Unselect completed.")


def register(registry: Registry) -> None:
    registry.command(Unselect)
