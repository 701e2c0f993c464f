"""IMAP4rev1's commands valid in any state (RFC 3501 6.1): CAPABILITY, NOOP,
LOGOUT; and the IMAP4rev1 capability itself."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import responses as R
from .base import ANY, Command, Registry, Reply, When, ok

if TYPE_CHECKING:
    from ..session import Session


@dataclass(frozen=True, kw_only=True)
class Capability(Command):
    name = "CAPABILITY"
    states = ANY

    async def run(self, s: "Session") -> Reply:
        s.write(R.untagged("CAPABILITY " + s.capability_text()))
        return ok("Capability completed.")


@dataclass(frozen=True, kw_only=True)
class Noop(Command):
    """Does nothing; the session reports what changed in the selected folder."""

    name = "NOOP"
    states = ANY

    async def run(self, s: "Session") -> Reply:
        return ok("NOOP completed.")


@dataclass(frozen=True, kw_only=True)
class Logout(Command):
    name = "LOGOUT"
    states = ANY

    async def run(self, s: "Session") -> None:
        s.write(R.untagged("BYE Logging out"))
        s.write(R.tagged(self.tag, "OK", "Logout completed."))
        s.logout()
        return None


def register(registry: Registry) -> None:
    registry.capability("IMAP4rev1", when=When.ALWAYS, order=0)
    for cls in (Capability, Noop, Logout):
        registry.command(cls)
