"""Mailbox moves on ``correo up``: the same orchestration as on Kubernetes
(``moverun.Mover`` over ``moves.decide``), with the local stack's records.

- owners: ``DATA/config/directory.yaml`` (what the servers read);
- wanted: the applied Mailboxes (``DATA/applied.json``), placed with
  ``placement.place`` against that directory (a pin elsewhere: a move);
- the flip: ``directory.yaml`` rewritten with the new owner, under the
  lock ``correo apply`` takes (the later renders keep it: ``placement``);
- the shards: their move listeners (TLS, the stack's certificate pinned),
  with the proxy credential (``DATA/config/proxy/secret``).

Each round's result goes to ``DATA/moves.json``, which ``correo status``
reads for the Mailbox's ``Moving`` condition.  ``$CORREO_MOVE_GRACE_SECONDS``
sets how long the old copy is kept (default an hour: ``moves``).
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import aiohttp

from correo_server import config as cfgmod
from correo_server import directory as dirmod
from correo_server import logs

from .. import moves, moverun, placement
from . import stack
from .layout import Layout, apply_lock, read_json, write_atomic, write_json

log = logs.get("correo.moves")

ROUND_SECONDS = 1.0
IDLE_ROUND_SECONDS = 30.0


def moves_file(layout: Layout) -> Path:
    return layout.root / "moves.json"


class LocalMover:
    def __init__(self, layout: Layout, ports: dict[str, int], shards: int, *, grace: float | None = None) -> None:
        self.layout = layout
        self.ports = ports
        self.shards = shards
        self.grace = moves.grace_from_environment() if grace is None else grace
        self.session: aiohttp.ClientSession | None = None
        self.mover: moverun.Mover | None = None
        self._idle_since = -IDLE_ROUND_SECONDS  # the first round looks

    # -- the records -----------------------------------------------------------------
    def _directory_text(self) -> str | None:
        try:
            return (self.layout.config / cfgmod.DIRECTORY_FILE).read_text(encoding="utf-8")
        except OSError:
            return None

    def owners(self) -> dict[str, int]:
        return placement.shards_in_directory(self._directory_text())

    def wanted(self) -> dict[str, int]:
        applied = stack.read_applied(self.layout)
        if applied is None:
            return {}
        loaded, _ = applied
        recorded = self.owners()
        out: dict[str, int] = {}
        for domain in loaded.maildomains():
            shards = domain.spec.mailstore.shards
            if shards <= 1:
                continue
            for mb in loaded.mailboxes_of(domain):
                address = mb.spec.address.lower()
                if address in recorded:
                    out[address] = placement.place(address, shards, pin=mb.spec.shard,
                                                   recorded=recorded[address]).wanted
        return out

    async def flip(self, address: str, shard: int) -> None:
        await asyncio.to_thread(self._flip, address, shard)

    def _flip(self, address: str, shard: int) -> None:
        with apply_lock(self.layout):
            current = dirmod.load(self.layout.config)
            entries = [dataclasses.replace(e, shard=shard or None) if e.address.lower() == address else e
                       for e in current.mailboxes]
            write_atomic(self.layout.config / cfgmod.DIRECTORY_FILE, dirmod.dump(entries), 0o600)
        log.info("directory_flipped", mailbox=address, shard=shard)

    # -- running -------------------------------------------------------------------------
    def _credentials(self) -> tuple[str, str | None]:
        """The proxy credential's secret, and the stack's certificate (PEM) when it has TLS."""
        cfg = cfgmod.load(self.layout.config)
        name = cfg.mailstore.proxy_secret_file
        secret = Path(cfg.path(name)).read_text(encoding="utf-8").strip() if name else ""
        cert = Path(cfg.path(cfg.tls.cert_file)).read_text(encoding="utf-8") if cfg.tls is not None else None
        return secret, cert

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=5))
        secret, cert = await asyncio.to_thread(self._credentials)
        pin = moverun.pinned(cert)
        scheme = "https" if pin is not None else "http"
        clients = {i: moverun.ShardClient(i, f"{scheme}://127.0.0.1:{self.ports[f'mailstore{i}_moves']}", secret,
                                          self.session, pin) for i in range(self.shards)}
        self.mover = moverun.Mover(clients, self.owners, self.wanted, self.flip, grace=self.grace)

    async def round(self) -> dict[str, moves.Step]:
        """One round; when no mailbox is in a move, the shards are looked at
        only every ``IDLE_ROUND_SECONDS`` (a move left by a crash is found then)."""
        assert self.mover is not None
        owners, wanted = self.owners(), self.wanted()
        busy = self.mover.last or any(wanted.get(a, s) != s for a, s in owners.items())
        if not busy and time.monotonic() - self._idle_since < IDLE_ROUND_SECONDS:
            return {}
        self._idle_since = time.monotonic()
        steps = await self.mover.round()
        await asyncio.to_thread(self._record, steps)
        return steps

    def _record(self, steps: dict[str, moves.Step]) -> None:
        old = read_json(moves_file(self.layout)) or {}
        doc = {}
        for address, step in steps.items():
            if step.reason == "NotMoving":
                continue
            before = old.get(address) or {}
            doc[address] = {"reason": step.reason, "message": step.message, "moving": step.moving,
                            "since": before.get("since") if before.get("reason") == step.reason else time.time()}
        if doc != old:
            write_json(moves_file(self.layout), doc)

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until ``stop``; a failing round is logged and tried again."""
        await self.start()
        try:
            while not stop.is_set():
                try:
                    await self.round()
                except Exception as exc:  # noqa: BLE001 - the next round tries again
                    log.warning("move_round_failed", error=f"{type(exc).__name__}: {exc}")
                try:
                    await asyncio.wait_for(stop.wait(), ROUND_SECONDS)
                except asyncio.TimeoutError:
                    pass
        finally:
            if self.session is not None:
                await self.session.close()


def status_of(layout: Layout) -> dict[str, dict]:
    """What the last round said of each mailbox in a move (for ``correo status``)."""
    return read_json(moves_file(layout)) or {}
