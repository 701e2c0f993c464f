"""STARTTLS (RFC 3501 6.2.1): offered before login when the server has a
key pair and the connection is not already TLS.  Anything the client sent
after the command is dropped (it was not protected; CVE-2011-0411 class)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import responses as R
from .base import Command, Registry, Reply, State, When, bad

if TYPE_CHECKING:
    from ..session import Session


@dataclass(frozen=True, kw_only=True)
class StartTls(Command):
    name = "STARTTLS"
    states = State.NOT_AUTHENTICATED

    async def run(self, s: "Session") -> Reply | None:
        if not s.ch.tls_available or s.ch.tls_active:
            return bad("TLS is already active" if s.ch.tls_active else "TLS is not available")
        s.write(R.tagged(self.tag, "OK", "Begin TLS negotiation now."))
        await s.ch.flush()
        await s.ch.start_tls()
        return None


def _offered(s: "Session") -> str | None:
    return "STARTTLS" if s.ch.tls_available and not s.ch.tls_active else None


def register(registry: Registry) -> None:
    registry.capability(_offered, when=When.BEFORE_LOGIN, order=11)
    registry.command(StartTls)
