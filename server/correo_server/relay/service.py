"""``correo serve relay``: the relay's listeners, its side port and its
readiness check, started and stopped as one service.

Listeners (from ``relay`` in ``correo.yaml``): ``smtp`` always (STARTTLS
offered when TLS is configured), ``submission`` always (without TLS only
loopback clients can log in, per ``auth.plaintext``), ``smtps`` only when TLS
is configured (skipped, with a log line, otherwise), and ``http`` (the side
port: ``/status`` per :class:`~correo_server.statusdoc.RelayStatus`,
``/metrics``, ``/healthz``, ``/readyz``).  Ready means the queue answered its
LHLO or NOOP on the last check (every ``ready_interval`` seconds).

The port-25 defences (:mod:`correo_server.defences`: SPF, DKIM, DMARC, the
own-domain rule, DNSBL, rspamd, SRS bounce addresses) are built from
``relay.filter`` (:func:`correo_server.defences.build`) unless a
:class:`~correo_server.defences.Defences` is given.

Stopping closes the listeners, lets a session that is inside DATA finish its
hand-off for up to ``grace`` seconds, then says ``421`` to the rest and closes
them: a client that did not get its ``250`` keeps its message and retries.
"""
from __future__ import annotations

import asyncio
import time
from typing import Callable

from .. import logs, queuereplicas
from ..config import Listen, ServerConfig
from .. import defences as defencesmod
from ..backscatter.relay import Backscatter
from ..defences import Defences
from ..directory import ReloadLog, watch_directory
from ..sideport import SidePort
from ..statusdoc import RelayStatus, rfc3339
from ..tlsfiles import ServerTLS
from . import context as ctxmod
from .context import RelayContext
from .handoff import QueueClient
from .queuepool import QueuePool
from .policy import Listener
from .smtp import RelaySMTP

log = logs.get(__name__)


class RelayService:
    def __init__(self, config: ServerConfig, config_dir: str, *, clock: Callable[[], float] | None = None,
                 handoff_timeout: float = 120.0, connect_timeout: float = 10.0, ready_interval: float = 5.0,
                 grace: float = 10.0, directory=None, defences: Defences | None = None,
                 queue_restart_wait: float = 10.0) -> None:
        self.config = config
        self.config_dir = config_dir
        self.ready_interval = ready_interval
        self.grace = grace
        self.tls = ServerTLS.from_config(config)
        clients = [QueueClient(target, local_hostname=config.hostname, timeout=handoff_timeout,
                               connect_timeout=connect_timeout, restart_wait=min(queue_restart_wait, handoff_timeout))
                   for target in queuereplicas.lmtp_targets(config)]
        # Several queue replicas: any ready one takes each message (relay.queuepool).
        queue = clients[0] if len(clients) == 1 else QueuePool(clients)
        if directory is None:
            directory = watch_directory(
                config_dir, config,
                on_error=lambda exc: log.warning("directory_reload_failed", error=str(exc)),
                on_reload=ReloadLog(log))
        if defences is None:
            defences = defencesmod.build(config)
        self.context = RelayContext(config=config, directory=directory, queue=queue, tls=self.tls,
                                    clock=clock or time.time, defences=defences)
        self.context.metrics.watch_tls(self.tls)
        self.context.backscatter = Backscatter.from_config(config, clock=self.context.clock,
                                                           metrics=self.context.metrics)
        self.sideport = SidePort(config.relay.http, "relay", metrics=self.context.metrics,
                                 status=self.status, ready=self.ready, reuse_port=True)
        self._servers: dict[str, asyncio.AbstractServer] = {}
        self._ready_task: asyncio.Task | None = None
        self.ports: dict[str, int] = {}

    # -- what the side port reports -------------------------------------------
    def status(self) -> RelayStatus:
        ctx = self.context
        doc = RelayStatus(service="relay", ready=ctx.queue_ready, time=rfc3339(ctx.clock()),
                          accepted=ctx.accepted, rejected=ctx.rejected)
        if ctx.backscatter is not None:
            doc["refused"] = ctx.backscatter.status()
        return doc

    def ready(self) -> bool:
        return self.context.queue_ready

    async def check_queue(self) -> bool:
        up = await self.context.queue.ping()
        if up != self.context.queue_ready:
            log.info("queue_reachable" if up else "queue_unreachable",
                     queue=", ".join(map(str, queuereplicas.lmtp_targets(self.config))))
        self.context.queue_ready = up
        self.context.metrics.set(ctxmod.QUEUE_UP, 1 if up else 0)
        return up

    async def _ready_loop(self) -> None:
        while True:
            try:
                await self.check_queue()
            except Exception as exc:  # never let the check die
                log.warning("queue_check_failed", error=str(exc))
            await asyncio.sleep(self.ready_interval)

    # -- lifecycle ---------------------------------------------------------------
    async def _listen(self, name: str, listen: Listen, listener: Listener) -> None:
        loop = asyncio.get_running_loop()
        implicit = listener is Listener.SMTPS
        starttls = None if implicit or self.tls is None else self.tls.context
        server = await loop.create_server(
            lambda: RelaySMTP(self.context, listener, starttls=starttls, implicit_tls=implicit),
            host=listen.host, port=listen.port, ssl=self.tls.context if implicit else None,
            reuse_address=True, reuse_port=True)  # a new relay takes over without a gap (correo up)
        self._servers[name] = server
        self.ports[name] = server.sockets[0].getsockname()[1]

    async def start(self) -> dict[str, int]:
        relay = self.config.relay
        try:
            await self._listen("smtp", relay.smtp, Listener.SMTP)
            await self._listen("submission", relay.submission, Listener.SUBMISSION)
            if self.tls is not None:
                await self._listen("smtps", relay.smtps, Listener.SMTPS)
            else:
                log.warning("listener_skipped", listener="smtps", reason="no TLS key pair configured")
            self.ports["http"] = await self.sideport.start()
        except BaseException:
            await self.stop()
            raise
        await self.check_queue()
        self._ready_task = asyncio.create_task(self._ready_loop())
        if self.context.backscatter is not None:
            self.context.backscatter.start()
        log.info("relay_started", ports=self.ports, queue=", ".join(map(str, queuereplicas.lmtp_targets(self.config))),
                 tls=self.tls is not None)
        return dict(self.ports)

    async def stop(self) -> None:
        if self._ready_task is not None:
            self._ready_task.cancel()
            try:
                await self._ready_task
            except asyncio.CancelledError:
                pass
            self._ready_task = None
        for server in self._servers.values():
            server.close()
        deadline = time.monotonic() + self.grace
        while any(s.busy for s in self.context.sessions) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for session in list(self.context.sessions):
            transport = session.transport
            if transport is not None and not transport.is_closing():
                try:
                    transport.write(b"421 4.3.2 Service shutting down; closing connection\r\n")
                except Exception:
                    pass
                transport.close()
        for server in self._servers.values():
            try:
                await asyncio.wait_for(server.wait_closed(), 2)
            except asyncio.TimeoutError:
                pass
        self._servers.clear()
        await self.sideport.stop()
        await self.context.queue.close()
        if self.context.backscatter is not None:
            await self.context.backscatter.close()
        if self.context.defences is not None:
            await self.context.defences.close()
