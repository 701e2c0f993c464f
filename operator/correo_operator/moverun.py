"""Carrying out mailbox moves: observe the shards, ask :func:`.moves.decide`,
act, observe again.  The operator runs it after its reconcile pass on
Kubernetes; ``correo up`` runs it in its watch loop (``local.mover``).

The shards are reached on their move listeners (``mailstore.moves``,
``correo_server.mailstore.moveport``: TLS, the stack's own certificate
pinned, when the stack has a key pair) with the proxy credential's secret.
The copy streams from the source's export straight into the target's
import through this process (the shards need not reach each other).  The
flip is the caller's (it writes the directory: a Secret, or
``directory.yaml``), handed in as ``flip``.

Fault points for crash tests (``correo_server.faults``; this process
dies there): ``move.fenced``, ``move.copied``, ``move.flipped``.
"""
from __future__ import annotations

import hashlib
import ssl
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Mapping

import aiohttp

from correo_server import faults, logs

from . import moves

log = logs.get(__name__)

Flip = Callable[[str, int], Awaitable[None]]


class MoveFailed(Exception):
    pass


@dataclass
class ShardClient:
    """One shard's move endpoints."""

    shard: int
    base: str  # https://host:port of its move listener (http:// when the stack has no TLS)
    secret: str
    session: aiohttp.ClientSession
    pin: aiohttp.Fingerprint | None = None  # TLS: the stack's own certificate (pod names are not on it)

    @property
    def _ssl(self):
        return self.pin if self.pin is not None else True

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}

    async def _post(self, path: str, **params) -> dict:
        async with self.session.post(f"{self.base}/internal/moves/{path}", params=params, headers=self._auth,
                                     ssl=self._ssl) as r:
            if r.status != 200:
                raise MoveFailed(f"shard {self.shard} {path}: {r.status} {(await r.text())[:300]}")
            return await r.json()

    async def observe(self) -> dict | None:
        try:
            async with self.session.get(f"{self.base}/internal/moves", headers=self._auth, ssl=self._ssl,
                                        timeout=aiohttp.ClientTimeout(total=10)) as r:
                return await r.json() if r.status == 200 else None
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return None

    async def fence(self, address: str, to: int) -> dict:
        return await self._post("fence", mailbox=address, to=str(to))

    async def unfence(self, address: str) -> dict:
        return await self._post("unfence", mailbox=address)

    async def remove(self, address: str) -> dict:
        return await self._post("remove", mailbox=address)

    async def settle(self, address: str) -> dict:
        return await self._post("settle", mailbox=address)

    async def check(self, address: str) -> str:
        """Why this shard could not take ``address`` by import ("" if it can)."""
        async with self.session.get(f"{self.base}/internal/moves/check", params={"mailbox": address},
                                    headers=self._auth, ssl=self._ssl,
                                    timeout=aiohttp.ClientTimeout(total=10)) as r:
            if r.status != 200:
                raise MoveFailed(f"shard {self.shard} check: {r.status} {(await r.text())[:300]}")
            doc = await r.json()
            return "" if doc.get("ok") else str(doc.get("reason") or "refused")

    async def copy_from(self, src: "ShardClient", address: str, fence: str) -> dict:
        return await copy(src, self, address, fence)


async def copy(src: ShardClient, dst: ShardClient, address: str, fence: str) -> dict:
    """Stream the source's export into the target's import; the target
    verifies it (files and summary) and answers with the digest."""
    timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
    async with src.session.get(f"{src.base}/internal/moves/export", params={"mailbox": address, "fence": fence},
                               headers=src._auth, ssl=src._ssl, timeout=timeout) as export:
        if export.status != 200:
            raise MoveFailed(f"shard {src.shard} export: {export.status} {(await export.text())[:300]}")

        async def body():
            async for chunk in export.content.iter_chunked(256 * 1024):
                yield chunk

        async with dst.session.post(f"{dst.base}/internal/moves/import",
                                    params={"mailbox": address, "from": str(src.shard), "fence": fence},
                                    headers=dst._auth, ssl=dst._ssl, data=body(), timeout=timeout) as imp:
            if imp.status != 200:
                raise MoveFailed(f"shard {dst.shard} import: {imp.status} {(await imp.text())[:300]}")
            return await imp.json()


def pinned(cert_pem: str | None) -> aiohttp.Fingerprint | None:
    """The stack's own certificate (the first of ``tls.crt``) as the only one
    a shard may show; None without one (the shards then speak plain HTTP)."""
    if not cert_pem or "-----BEGIN CERTIFICATE-----" not in cert_pem:
        return None
    start = cert_pem.index("-----BEGIN CERTIFICATE-----")
    end = cert_pem.index("-----END CERTIFICATE-----", start) + len("-----END CERTIFICATE-----")
    return aiohttp.Fingerprint(hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert_pem[start:end])).digest())


@dataclass
class Observation:
    up: frozenset[int]
    fences: dict[str, tuple[moves.Fence, ...]] = field(default_factory=dict)
    copies: dict[str, tuple[moves.Copy, ...]] = field(default_factory=dict)


async def observe(clients: Mapping[int, ShardClient]) -> Observation:
    up: set[int] = set()
    fences: dict[str, list[moves.Fence]] = {}
    copies: dict[str, list[moves.Copy]] = {}
    for shard, client in sorted(clients.items()):
        doc = await client.observe()
        if doc is None:
            continue
        up.add(shard)
        for address, m in (doc.get("fenced") or {}).items():
            if "fence" in m:
                fences.setdefault(address, []).append(moves.Fence(shard, int(m.get("to", -1)), m["fence"],
                                                                  float(m.get("since", 0))))
        for address, m in (doc.get("imported") or {}).items():
            copies.setdefault(address, []).append(moves.Copy(shard, int(m.get("from", -1)), m.get("fence", ""),
                                                             m.get("digest", ""), float(m.get("at", 0)),
                                                             int(m.get("messages", 0))))
    return Observation(frozenset(up), {a: tuple(v) for a, v in fences.items()},
                       {a: tuple(v) for a, v in copies.items()})


def facts_for(address: str, owner: int, wanted: int, seen: Observation, now: float, grace: float,
              blocked: str = "") -> moves.Facts:
    return moves.Facts(address, owner, wanted, seen.up, seen.fences.get(address, ()), seen.copies.get(address, ()),
                       now, grace, blocked)


async def act(step: moves.Step, address: str, clients: Mapping[int, ShardClient], flip: Flip) -> None:
    bound = log.bind(mailbox=address, step=step.action, reason=step.reason)
    if step.action == "fence":
        doc = await clients[step.shard].fence(address, step.extra["to"])
        bound.info("move_fenced", shard=step.shard, to=step.extra["to"], fence=doc.get("fence"))
        faults.point("move.fenced")
    elif step.action == "copy":
        started = time.monotonic()
        done = await clients[step.shard].copy_from(clients[step.source], address, step.fence)
        bound.info("move_copied", source=step.source, target=step.shard, digest=done.get("digest"),
                   messages=(done.get("summary") or {}).get("messages"), seconds=round(time.monotonic() - started, 3))
        faults.point("move.copied")
    elif step.action == "flip":
        await flip(address, step.shard)
        bound.info("move_switched", source=step.source, target=step.shard)
        faults.point("move.flipped")
    elif step.action == "unfence":
        await clients[step.shard].unfence(address)
        bound.info("move_called_off", shard=step.shard)
    elif step.action in ("discard", "remove"):
        await clients[step.shard].remove(address)
        bound.info("move_old_copy_removed" if step.action == "remove" else "move_unused_copy_removed", shard=step.shard)
    elif step.action == "settle":
        await clients[step.shard].settle(address)
        bound.info("move_done", shard=step.shard)


@dataclass
class Mover:
    """Drives every mailbox's move as far as it can go now.

    ``owners`` and ``wanted`` are read fresh each round (callables: the
    directory may have been flipped by the round before)."""

    clients: Mapping[int, ShardClient]
    owners: Callable[[], Mapping[str, int]]
    wanted: Callable[[], Mapping[str, int]]
    flip: Flip
    grace: float = moves.DEFAULT_GRACE_SECONDS
    clock: Callable[[], float] = time.time
    max_steps: int = 12
    last: dict[str, moves.Step] = field(default_factory=dict)  # the latest step of each mailbox in a move

    async def round(self) -> dict[str, moves.Step]:
        """Observe, then for each mailbox in a move decide and act until it
        has nothing to do now (or an action fails: logged, tried next round).
        Returns each involved mailbox's step as it stands after the round."""
        out: dict[str, moves.Step] = {}
        seen = await observe(self.clients)
        for _ in range(self.max_steps):
            owners, wanted = self.owners(), self.wanted()
            acted = False
            addresses = sorted(set(a for a in owners if moves.involved(owners[a], wanted.get(a, owners[a]),
                                                                        seen.fences.get(a, ()), seen.copies.get(a, ())))
                               | set(seen.fences) | set(seen.copies))
            for address in addresses:
                owner = owners.get(address)
                if owner is None:  # a mailbox no longer in the directory: leave its files alone
                    continue
                target = wanted.get(address, owner)
                blocked = ""
                if target != owner and target in seen.up and target in self.clients:
                    try:  # before the fence: a move that cannot finish must not hold the mailbox
                        blocked = await self.clients[target].check(address)
                    except (MoveFailed, aiohttp.ClientError, OSError, TimeoutError) as exc:
                        log.warning("move_check_failed", mailbox=address, shard=target, error=str(exc)[:300])
                        continue
                step = moves.decide(facts_for(address, owner, target, seen, self.clock(), self.grace, blocked))
                out[address] = step
                if not step.acts:
                    continue
                try:
                    await act(step, address, self.clients, self.flip)
                    acted = True
                except (MoveFailed, aiohttp.ClientError, OSError, TimeoutError) as exc:
                    log.warning("move_step_failed", mailbox=address, step=step.action, reason=step.reason,
                                error=str(exc)[:500])
            if not acted:
                break
            seen = await observe(self.clients)
        for address, step in out.items():
            if self.last.get(address) != step:
                log.info("move_state", mailbox=address, reason=step.reason, moving=step.moving, message=step.message)
        self.last = out
        return out
