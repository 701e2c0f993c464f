"""STARTTLS (RFC 3501 6.2.1): offered before login when the server has a
key pair and the connection is not already TLS.  Anything the client sent
after the command is dropped (it was not protected; CVE-2011-0411 class).
A handshake that fails (an old TLS version, a client that gives up) is the
client's business: one info line (``imap_tls_failed``) and the connection
is closed, never an error with a traceback."""
from __future__ import annotations

import ssl
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
        try:
            await s.ch.start_tls()
        except (ssl.SSLError, ConnectionError, OSError, TimeoutError, EOFError) as exc:
            from ..session import Closing
            s.log.info("imap_tls_failed", error=(str(exc) or type(exc).__name__)[:200])
            s.close()
            raise Closing() from None
        return None


def _offered(s: "Session") -> str | None:
    return "STARTTLS" if s.ch.tls_available and not s.ch.tls_active else None


def register(registry: Registry) -> None:
    registry.capability(_offered, when=When.BEFORE_LOGIN, order=11)
    registry.command(StartTls)
