"""IDLE (RFC 2177): changes in the selected folder are sent as they happen,
until the client says DONE.  The autologout timer (``mailstore.
imapIdleTimeoutSeconds``) still applies."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import responses as R
from ..states import Selected
from .base import LOGGED_IN, Command, Registry, Reply, bad, ok

if TYPE_CHECKING:
    from ..session import Session


@dataclass(frozen=True, kw_only=True)
class Idle(Command):
    name = "IDLE"
    states = LOGGED_IN
    capability = "IDLE"

    async def run(self, s: "Session") -> Reply:
        from ..session import Closing

        s.write(R.continuation("idling"))
        await s.ch.flush()
        reader = asyncio.ensure_future(s.ch.read_line())
        deadline = time.monotonic() + s.idle_timeout
        try:
            while True:
                view = s.state.view if isinstance(s.state, Selected) else None
                if view is not None:
                    for line in view.sync(allow_expunge=True, condstore=s.condstore):
                        s.write(line)
                    for hook in s.registry.after_sync:
                        await hook(s)
                    if s.ch.pending():
                        await s.ch.flush()
                waits: list[asyncio.Future] = [reader]
                watch = None
                if view is not None:
                    watch = asyncio.ensure_future(view.watcher.wait())
                    waits.append(watch)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise asyncio.TimeoutError
                done, _ = await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                if watch is not None and not watch.done():
                    watch.cancel()
                if reader in done:
                    try:
                        line = reader.result().rstrip(b"\r\n")
                    except (EOFError, ConnectionError):
                        raise
                    except Exception:  # an over-long line
                        return bad("Expected DONE.")
                    return ok("Idle completed.") if line.upper() == b"DONE" else bad("Expected DONE.")
                if not done:
                    raise asyncio.TimeoutError
        except asyncio.TimeoutError:
            reader.cancel()
            s.bye("Disconnected for inactivity.")
            raise Closing() from None
        finally:
            if not reader.done():
                reader.cancel()


def register(registry: Registry) -> None:
    registry.command(Idle)
