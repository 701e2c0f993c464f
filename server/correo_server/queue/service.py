"""``QueueService``: the queue as ``correo serve queue --config DIR`` runs it.

Start-up order matters for durability: the spool is locked first (one queue
per spool, :mod:`.spoollock`; a second one fails to start, naming the folder
and the holder's pid), then recovered (temp
files removed, snapshot loaded, journals replayed, finished messages removed,
a fresh snapshot written), then the runner resumes every message where it
was (pending ones at once, deferred ones at their time), and only then does
the LMTP listener accept new mail.  Stopping runs the other way: no new mail,
deliveries in flight finish (or are abandoned safely: they stay due on disk),
the journal is flushed, the lock is let go.

A replica past ``queue.replicas`` (:func:`correo_server.queuereplicas.leaving`)
starts the same way up to the runner, then neither delivers nor listens for
mail: it hands its messages to the others (:mod:`.handover`) and reports
``drain`` in its ``/status`` until its spool is empty.
"""
from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from aiohttp import web

from .. import logs, queuereplicas
from ..config import ServerConfig
from ..directory import Directory, ReloadLog, Reloading, watch_directory
from ..metrics import Registry
from ..refusalreport import RefusalStore
from . import status as statusmod
from .admin import AdminSidePort
from .clock import Clock, SystemClock
from .handover import Drainer, transfer_key
from .intake import Intake
from ..wire.server import Listener
from .lmtp_in import Handler, start_listener
from .mx import MXResolver, make_resolver
from .ownership import reowned
from .records import Figures, Message, QueueState
from .runner import Runner
from .spool import Spool
from .spoollock import SpoolLock

log = logs.get(__name__)


def restore_state(spool: Spool) -> QueueState:
    """Rebuild the state from disk: snapshot, then the journals' events."""
    found = spool.recover()
    snap = (found.snapshot or {}).get("state", {})
    state = QueueState(Figures.from_json(snap.get("figures", {})))
    saved = snap.get("messages", {})
    for msg_id, env in found.envelopes.items():
        if msg_id in saved:  # (the state a handed-over message came with is in the snapshot's now)
            state.add(Message.from_json(dataclasses.replace(env, handed=None) if env.handed else env, saved[msg_id]))
        else:
            state.add(Message.arrived(env))
    for ev in found.events:
        state.apply(ev)
    finished = [m.id for m in state if m.complete()]
    for msg_id in finished:
        spool.remove(msg_id)
        state.remove(msg_id)
    log.info("spool_recovered", messages=len(state), events=len(found.events), finished=len(finished),
             temp_files_removed=found.cleaned, torn_journal_lines=found.torn, corrupt=len(found.corrupt))
    return state


def adopt(cfg: ServerConfig, state: QueueState) -> None:
    """Give every spooled message a hosted owner (in memory; the file keeps
    what it was written with): messages spooled when they could belong to
    no domain, or whose domain has been removed since, are counted and
    retried under the domain :func:`.ownership.owner_of` names."""
    moved = 0
    for msg in state:
        env = reowned(cfg, msg.env)
        if env is not msg.env:
            msg.env = env
            moved += 1
    if moved:
        log.info("spool_owners_updated", messages=moved)


async def _leaving_refusals(_request: web.Request) -> web.Response:
    """A leaving replica takes no refusal reports: the relay keeps the counts
    and reports them again (to another replica, through the Service)."""
    return web.json_response({"error": "this queue replica is leaving; report to another"}, status=503)


class QueueService:
    def __init__(self, config: ServerConfig, config_dir: str, *, clock: Clock | None = None,
                 directory: Reloading[Directory] | None = None, linger: float = 2.0) -> None:
        self.config = config
        self.config_dir = config_dir
        self.clock: Clock = clock or SystemClock()
        self._directory = directory
        self.linger = linger
        self.metrics = Registry()
        self.spool = Spool(config.path(config.queue.spool_dir), min_free_bytes=config.queue.min_free_bytes)
        self.lock = SpoolLock(self.spool.root)
        self.state: QueueState | None = None
        self.runner: Runner | None = None
        self.sideport: AdminSidePort | None = None
        self.refusals: RefusalStore | None = None  # what the relays refused (refusalreport)
        self.drainer: Drainer | None = None  # a leaving replica's (queuereplicas.leaving)
        self._lmtp: Listener | None = None
        self.ports: dict[str, int] = {}

    async def start(self) -> dict[str, int]:
        """Lock the spool (raises :class:`.spoollock.SpoolInUse` when another
        queue holds it), recover it, start delivering, then listen."""
        self.lock.acquire()
        try:
            return await self._start()
        except BaseException:
            try:
                await self.stop(grace=0.0)  # what did start, stops; the lock is let go
            finally:
                self.lock.release()
            raise

    async def _start(self) -> dict[str, int]:
        cfg = self.config
        if self._directory is None:
            self._directory = watch_directory(
                self.config_dir, cfg,
                on_error=lambda exc: log.warning("directory_reload_failed", error=str(exc)),
                on_reload=ReloadLog(log))
        directory = self._directory
        state = await asyncio.to_thread(restore_state, self.spool)
        adopt(cfg, state)
        self.state = state
        await asyncio.to_thread(self.spool.open_journal, state.snapshot)
        resolver = MXResolver(make_resolver(cfg.queue.nameservers, timeout=float(cfg.queue.connect_timeout_seconds)))
        intake = Intake(cfg, directory.get, self.spool, state, self.clock, on_new=lambda m: self.runner.reschedule(m))
        self.runner = Runner(cfg=cfg, state=state, spool=self.spool, clock=self.clock, intake=intake,
                             resolver=resolver, metrics=self.metrics, linger=self.linger)
        statusmod.register_metrics(self.metrics, state, self.clock, cfg)
        self.metrics.counter("queue_handed_over_total", "Messages this replica handed to another as it drained "
                             "(queue.handover)", labels=())
        self.metrics.counter("queue_taken_over_total", "Messages a draining replica handed to this one", labels=())
        self.metrics.watch_volume("spool", self.spool.root)
        if queuereplicas.leaving(cfg):
            return await self._start_leaving(state)
        self.runner.start()
        handler = Handler(intake, self.spool, cfg.queue.max_message_bytes, self.metrics)
        handler.transfer_key = transfer_key(cfg)  # hand-overs from leaving replicas are signed (handover)
        self._lmtp = await start_listener(cfg.queue.lmtp, handler, hostname=cfg.hostname,
                                          max_message_bytes=cfg.queue.max_message_bytes,
                                          max_line=cfg.relay.max_line_length + 3,
                                          timeout=float(cfg.queue.command_timeout_seconds))
        self.refusals = RefusalStore.from_config(cfg)
        self.sideport = AdminSidePort(cfg.queue.http, "queue", metrics=self.metrics, status=self.status,
                                      ready=self.ready, runner=self.runner,
                                      routes=(("POST", "/refusals", self.refusals.handle),))
        http_port = await self.sideport.start()
        assert self._lmtp.server is not None
        lmtp_port = self._lmtp.server.sockets[0].getsockname()[1]
        self.ports = {"lmtp": lmtp_port, "http": http_port}
        log.info("queue_started", spool=str(self.spool.root), messages=len(state), **self.ports)
        return dict(self.ports)

    async def _start_leaving(self, state: QueueState) -> dict[str, int]:
        """A replica past ``queue.replicas``: no LMTP listener (the relay
        takes it off its list; nothing new comes), no deliveries; every
        message goes, with its history, to the replicas that stay
        (:mod:`.handover`), and ``/status`` says how far that is."""
        cfg = self.config
        self.refusals = RefusalStore.from_config(cfg)  # reported in /status until handed over
        self.drainer = Drainer(state=state, spool=self.spool, clock=self.clock, metrics=self.metrics,
                               targets=queuereplicas.peers(cfg), hostname=cfg.hostname, replica=cfg.queue.replica,
                               refusals=self.refusals, http_targets=queuereplicas.http_peers(cfg),
                               key=transfer_key(cfg))
        assert self.runner is not None
        self.sideport = AdminSidePort(cfg.queue.http, "queue", metrics=self.metrics, status=self.status,
                                      ready=self.ready, runner=self.runner,
                                      routes=(("POST", "/refusals", _leaving_refusals),))
        http_port = await self.sideport.start()
        self.ports = {"http": http_port}
        log.info("queue_started_leaving", spool=str(self.spool.root), replica=cfg.queue.replica,
                 messages=len(state), **self.ports)
        self.drainer.start()
        return dict(self.ports)

    def ready(self) -> bool:
        if self.drainer is not None:  # leaving: ready while it drains (a StatefulSet rollout goes on)
            return self.drainer.running or self.drainer.done.is_set()
        return (self.runner is not None and self.runner.running and self._lmtp is not None
                and self._lmtp.server is not None and self._lmtp.server.is_serving() and self.spool.has_room())

    def status(self) -> dict[str, Any]:
        assert self.state is not None
        doc = statusmod.build(self.config, self.state, self.clock.now(), ready=self.ready())
        if self.refusals is not None:
            doc["refusals"] = self.refusals.to_json()
        if self.config.queue.replica is not None:  # one of several replicas: which, and what it holds
            doc["replica"] = self.config.queue.replica
            doc["messages"] = len(self.state)
        if self.drainer is not None:
            doc["drain"] = self.drainer.status()
        return doc

    async def stop(self, grace: float = 10.0) -> None:
        if self.drainer is not None:
            await self.drainer.stop()  # a transfer cut short is repeated at the next start
        if self._lmtp is not None:
            # No new connections; messages being spooled finish and get their
            # 250; then every connection closes (a client without its 250
            # keeps the message and tries again).
            await self._lmtp.close(grace)
            self._lmtp = None
        if self.runner is not None:
            await self.runner.stop(grace)
        if self.spool.journal is not None:
            await self.spool.journal.close()
        if self.sideport is not None:
            await self.sideport.stop()
        if self.refusals is not None:
            await self.refusals.close()
        self.lock.release()
        log.info("queue_stopped")
