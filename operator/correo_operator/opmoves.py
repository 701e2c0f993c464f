"""Mailbox moves on Kubernetes: the operator's side of ``moverun``.

After each reconcile pass of a MailDomain with shards (and so on every
status resync), :class:`OperatorMoves` runs one round of ``moverun.Mover``:

- owners: the directory Secret in force (``<name>-directory``);
- wanted: where the pass placed each Mailbox (``placement``: a pin on a
  recorded mailbox is ``Moving``, its ``moving_to`` the pin);
- the shards: ``https://<name>-mailstore-<i>.<name>-mailstore-internal.<ns>.svc:8086``
  (``render.moves_url``; the stack's own certificate from the TLS Secret
  pinned; plain HTTP only for a domain without TLS), with the proxy
  credential's secret (the Secret ``proxykeys`` made);
- the flip: the directory Secret applied again with the new owner (the same
  object render makes, one entry changed); the next pass keeps it, since
  render keeps what the directory in force records.

It runs inside the Reconciler's pass, so no other pass of the same
MailDomain writes the directory meanwhile.  What each round found goes to
the Mailboxes' ``Moving`` condition (``status.mailbox_moving``).  The
shards are asked on every pass, moves or not (a status resync is every 30 s),
so that a move a restarted operator left half-done is found and finished.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import aiohttp

from correo_server import config as cfgmod
from correo_server import directory as dirmod
from correo_server import logs

from . import moverun, moves
from . import render as rendering
from . import secretdata
from .kube import Kube, b64
from .model import MailDomain
from .reconcile import Outcome

log = logs.get(__name__)

ClientsFor = Callable[[MailDomain, str, aiohttp.ClientSession, "aiohttp.Fingerprint | None"],
                      Mapping[int, moverun.ShardClient]]
_KEPT_META = ("name", "namespace", "labels", "annotations", "ownerReferences")


def http_clients(domain: MailDomain, secret: str, session: aiohttp.ClientSession,
                 pin: "aiohttp.Fingerprint | None") -> dict[int, moverun.ShardClient]:
    return {i: moverun.ShardClient(i, rendering.moves_url(domain, i), secret, session, pin)
            for i in range(domain.spec.mailstore.shards)}


def _child(outcome: Outcome, name: str) -> dict | None:
    return next((o for o in outcome.children if o.get("kind") == "Secret" and o["metadata"].get("name") == name), None)


def flipped_secret(live: dict, address: str, shard: int) -> dict:
    """The directory Secret ``live`` with ``address`` owned by ``shard``, as
    an apply configuration (what render applies, one entry changed)."""
    text = secretdata.secret_value(live, cfgmod.DIRECTORY_FILE) or ""
    entries = [dataclasses.replace(e, shard=shard or None) if e.address.lower() == address else e
               for e in dirmod.parse(text).mailboxes]
    meta = {k: v for k, v in live["metadata"].items() if k in _KEPT_META}
    return {"apiVersion": "v1", "kind": "Secret", "type": live.get("type", "Opaque"), "metadata": meta,
            "data": {**(live.get("data") or {}), cfgmod.DIRECTORY_FILE: b64(dirmod.dump(entries))}}


class OperatorMoves:
    def __init__(self, clients_for: ClientsFor = http_clients, *, grace: float | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.clients_for = clients_for
        self.grace = moves.grace_from_environment() if grace is None else grace  # $CORREO_MOVE_GRACE_SECONDS
        self.clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._last: dict[tuple[str, str], dict[str, moves.Step]] = {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def __call__(self, kube: Kube, outcome: Outcome) -> tuple[dict[str, moves.Step], dict[str, int]]:
        """One round for the pass's MailDomain: (each involved mailbox's step,
        the owners after the round)."""
        domain = outcome.inputs.domain
        owners: dict[str, int] = {}
        directory = _child(outcome, rendering.names(domain)["directory"])
        if directory is not None:
            from .placement import shards_in_directory
            owners = shards_in_directory(secretdata.secret_value(directory, cfgmod.DIRECTORY_FILE))
        if domain.spec.mailstore.shards <= 1 or directory is None:
            return {}, owners
        wanted = {a: p.wanted for a, p in outcome.placements.items()}
        key = (domain.namespace, domain.name)
        proxy = _child(outcome, rendering.proxy_secret_name(domain))
        secret = secretdata.secret_value(proxy, rendering.PROXY_SECRET_KEY) if proxy is not None else None
        if not secret:
            return {}, owners
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=5))

        async def flip(address: str, shard: int) -> None:
            live = await kube.get("v1", "Secret", domain.namespace, rendering.names(domain)["directory"])
            if live is None:
                raise moverun.MoveFailed("the directory Secret is gone")
            await kube.apply(flipped_secret(live, address, shard))
            owners[address] = shard
            log.info("directory flipped", namespace=domain.namespace, name=domain.name, mailbox=address, shard=shard)

        pin = None
        if domain.tls_secret:  # the shards show the stack's own certificate: pinned (pod names are not on it)
            tls = outcome.inputs.secrets.get(domain.tls_secret)
            pin = moverun.pinned(secretdata.secret_value(tls, "tls.crt") if tls is not None else None)
            if pin is None:
                log.warning("mailbox moves wait for the TLS Secret", namespace=domain.namespace, name=domain.name,
                            secret=domain.tls_secret)
                return {}, owners
        mover = moverun.Mover(self.clients_for(domain, secret, self._session, pin), lambda: owners, lambda: wanted, flip,
                              grace=self.grace, last=self._last.get(key, {}),
                              **({"clock": self.clock} if self.clock else {}))
        steps = await mover.round()
        self._last[key] = {a: s for a, s in steps.items() if s.reason != "NotMoving"}
        return steps, owners
