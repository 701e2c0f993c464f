"""ENABLE (RFC 5161): switch on extensions registered as ENABLE targets
(``registry.enable``); the reply lists those newly enabled."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import responses as R
from ..reader import Reader
from .base import LOGGED_IN, Command, Parse, Registry, Reply, ok

if TYPE_CHECKING:
    from ..session import Session


@dataclass(frozen=True, kw_only=True)
class Enable(Command):
    name = "ENABLE"
    states = LOGGED_IN
    capability = "ENABLE"
    usage = "{cmd} needs capability names"

    capabilities: list[str]

    @classmethod
    def parse(cls, r: Reader, p: Parse) -> "Enable":
        caps = []
        while r.take(b" "):
            caps.append(r.atom("a capability").upper())
        if not caps:
            if r.at_end():
                r.missing()
            r.expected("capability names")
        return cls(tag=p.tag, capabilities=caps)

    async def run(self, s: "Session") -> Reply:
        table = s.registry.enableable
        enabled = [table[c].name for c in dict.fromkeys(self.capabilities) if c in table and s.enable(c)]
        s.write(R.untagged(" ".join(["ENABLED", *enabled])))
        return ok("Enabled.")


def register(registry: Registry) -> None:
    registry.command(Enable)
