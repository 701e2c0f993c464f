"""NAMESPACE (RFC 2342): one personal namespace, no prefix, ``/``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import responses as R
from .base import LOGGED_IN, Command, Registry, Reply, ok

if TYPE_CHECKING:
    from ..session import Session


@dataclass(frozen=True, kw_only=True)
class Namespace(Command):
    name = "NAMESPACE"
    states = LOGGED_IN
    capability = "NAMESPACE"

    async def run(self, s: "Session") -> Reply:
        s.write(R.untagged(b'NAMESPACE (("" "/")) NIL NIL'))
        return ok("Namespace completed.")


def register(registry: Registry) -> None:
    registry.command(Namespace)
