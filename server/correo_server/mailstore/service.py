"""``MailstoreService``: the mailstore pod, as ``correo serve mailstore`` runs it.

Builds the :class:`~.context.MailstoreContext` from a configuration folder
(the directory reloaded when its file changes, the :class:`~.store.Store`
on ``mailstore.dataDir``, TLS that follows its certificate files, the login
throttle, one connection gate per protocol family), then starts:

========  ============================================  =====================
name      what                                          when
========  ============================================  =====================
lmtp      delivery from the queue (:mod:`.lmtp`)        always
imap      IMAP4rev1 with STARTTLS (:mod:`.imap.server`) ``imapEnabled``
imaps     IMAP over implicit TLS                        ``imapEnabled`` + TLS
pop3      POP3 with STLS (:mod:`.pop3.server`)          ``pop3Enabled``
pop3s     POP3 over implicit TLS                        ``pop3Enabled`` + TLS
http      the side port: /healthz /readyz /metrics      always
          /status (:mod:`.status`)
========  ============================================  =====================

(a shard with the proxy credential also listens on ``moves``: the move
endpoints, :mod:`.moveport`, over TLS when the stack has its key pair) and ``managesieve`` (RFC 5804 with STARTTLS, :mod:`.managesieve.server`)
when ``managesieveEnabled``, which the renderer sets.

``start()`` first takes the data folder's lock (:mod:`.datalock`: one
mailstore per ``dataDir``; a second one fails to start with
:class:`~.datalock.DataDirInUse`, naming the folder and the holder's pid),
then returns listener name → bound port; ``stop()`` stops accepting, lets
deliveries being stored finish, ends the sessions, closes the store and
releases the lock.
"""
from __future__ import annotations

import asyncio
import os
import time

from aiohttp import web

from .. import logs
from ..backscatter import quota
from ..config import ServerConfig
from ..directory import ReloadLog, watch_directory
from ..guard import ConnectionGate, InflightBudget, LoginThrottle
from ..logincache import LoginCache
from ..metrics import Registry
from ..proxyauth import ProxyCredential
from ..sideport import SidePort
from ..tlsfiles import ServerTLS
from . import lmtp, status, transfer
from .context import MailstoreContext
from .datalock import DataDirLock
from .managesieve import server as sieveserver
from .moveport import MoveEndpoints
from .pop3 import server as pop3server
from .rules import clock as rulesclock
from .rules.delivery import DeliveryRules
from .rules.report import mailbox_rules
from .store import Store

log = logs.get(__name__)

USAGE_REFRESH_SECONDS = 30.0


class MailstoreService:
    def __init__(self, config: ServerConfig, config_dir: str) -> None:
        self.config = config
        self.config_dir = config_dir
        self.ctx: MailstoreContext | None = None
        self.data_dir = config.path(config.mailstore.data_dir)
        self._lock = DataDirLock(self.data_dir)
        self._servers: dict[str, asyncio.AbstractServer] = {}
        self._sideport: SidePort | None = None
        self._moves: tuple[web.AppRunner, int] | None = None  # the move endpoints' listener, its port
        self._listening = False
        self._usage: dict[str, status.Usage] = {}
        self._refresher: asyncio.Task | None = None

    # -- building --------------------------------------------------------------------
    def _context(self) -> MailstoreContext:
        cfg = self.config
        m = cfg.mailstore
        directory = watch_directory(
            self.config_dir, cfg,
            on_error=lambda exc: log.warning("directory_reload_failed", error=str(exc)),
            on_reload=ReloadLog(log),
        )
        return MailstoreContext(
            config=cfg,
            directory=directory,
            store=Store.from_config(cfg, directory),
            tls=ServerTLS.from_config(cfg),
            throttle=LoginThrottle.from_settings(cfg.auth),
            login_cache=LoginCache.from_settings(cfg.auth),
            metrics=Registry(),
            imap_gate=ConnectionGate(m.max_connections, m.max_connections_per_client),
            imap_literals=InflightBudget(m.max_inflight_literal_bytes),
            pop3_gate=ConnectionGate(m.max_connections, m.max_connections_per_client),
            managesieve_gate=ConnectionGate(m.max_connections, m.max_connections_per_client),
            clock=rulesclock.from_environment(),
            proxy=ProxyCredential.from_config(cfg),
        )

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> dict[str, int]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()  # before the store touches a file
        except Exception as exc:
            log.error("mailstore_data_dir_locked", data_dir=str(self.data_dir), error=str(exc))
            raise
        try:
            ctx = self.ctx = self._context()
        except BaseException:
            self._lock.release()
            raise
        m = self.config.mailstore
        transfer.sweep(self.data_dir)  # what a move cut off by a crash left half-made
        ctx.store.fenced.update(transfer.markers(self.data_dir, transfer.OUT_MARKER))  # fences outlive a restart
        ctx.rules = DeliveryRules(ctx)  # Sieve scripts and auto-replies at delivery
        self._register_metrics(ctx.metrics)
        try:
            self._servers["lmtp"] = await lmtp.serve_lmtp(ctx, m.lmtp)
            if m.imap_enabled:
                from .imap.server import serve_imap  # the IMAP server (imported only when enabled)
                self._servers["imap"] = await serve_imap(ctx, m.imap)
                if ctx.tls is not None and m.shard is None:  # a shard's clients come through the proxy
                    self._servers["imaps"] = await serve_imap(ctx, m.imaps, implicit_tls=True)
            if m.pop3_enabled:
                self._servers["pop3"] = await pop3server.serve_pop3(ctx, m.pop3)
                if ctx.tls is not None and m.shard is None:
                    self._servers["pop3s"] = await pop3server.serve_pop3(ctx, m.pop3s, implicit_tls=True)
            if m.managesieve_enabled:
                self._servers["managesieve"] = await sieveserver.serve_managesieve(ctx, m.managesieve)
            self._sideport = SidePort(m.http, "mailstore", metrics=ctx.metrics,
                                      status=self.status_document, ready=self.ready,
                                      routes=(("GET", "/quota", self.quota_document),))
            http_port = await self._sideport.start()
            if ctx.proxy is not None and m.shard is not None:  # a shard: mailbox moves, TLS when the stack has it
                self._moves = await MoveEndpoints(self).serve(m.moves, ctx.tls)
        except BaseException:
            await self.stop()
            raise
        ports = {name: server.sockets[0].getsockname()[1] for name, server in self._servers.items()}
        ports["http"] = http_port
        if self._moves is not None:
            ports["moves"] = self._moves[1]
        self._listening = True
        self._refresher = asyncio.create_task(self._refresh_usage_forever())
        log.info("mailstore_listening", ports=ports, data_dir=str(self.data_dir), tls=ctx.tls is not None)
        return ports

    async def stop(self) -> None:
        self._listening = False
        if self._refresher is not None:
            self._refresher.cancel()
            try:
                await self._refresher
            except (asyncio.CancelledError, Exception):
                pass
            self._refresher = None
        if self._sideport is not None:
            await self._sideport.stop()
            self._sideport = None
        if self._moves is not None:
            await self._moves[0].cleanup()
            self._moves = None
        servers, self._servers = self._servers, {}
        for name, server in servers.items():
            try:
                if name == "lmtp":
                    await lmtp.shutdown(server)
                elif name in ("pop3", "pop3s"):
                    await pop3server.shutdown(server)
                elif name == "managesieve":
                    await sieveserver.shutdown(server)
                else:
                    await self._shutdown_imap(server)
            except Exception as exc:  # keep closing the others
                log.warning("listener_close_failed", listener=name, error=str(exc))
        if self.ctx is not None:
            await self.ctx.store.close()
        self._lock.release()  # last: nothing of ours touches the folder any more

    async def _shutdown_imap(self, server: asyncio.AbstractServer) -> None:
        try:
            from .imap.server import shutdown as imap_shutdown  # if the IMAP server offers one
        except ImportError:
            imap_shutdown = None
        if imap_shutdown is not None:
            await imap_shutdown(server)
        else:
            server.close()
            await server.wait_closed()

    # -- side port ---------------------------------------------------------------------
    def _writable(self) -> bool:
        probe = self.data_dir / f".readyz-{os.getpid()}"
        try:
            with open(probe, "wb") as fh:
                fh.write(b"ok")
            probe.unlink()
            return True
        except OSError:
            return False

    async def ready(self) -> bool:
        """Listening, and the data folder takes writes."""
        return self._listening and await asyncio.to_thread(self._writable)

    def _own_entries(self) -> list:
        """The directory's mailboxes this mailstore holds (a shard: its own only)."""
        assert self.ctx is not None
        own = self.config.mailstore.shard
        return [e for e in self.ctx.directory.get() if own is None or e.shard_id == own]

    async def _refresh_usage(self) -> dict[str, status.Usage]:
        assert self.ctx is not None
        store = self.ctx.store
        fresh: dict[str, status.Usage] = {}
        for entry in self._own_entries():
            address = entry.address.lower()
            if address in store.fenced:  # being moved away: its figures as they were
                fresh[address] = self._usage.get(address, status.Usage())
                continue
            try:
                u = await store.usage(address)
            except Exception as exc:  # one broken mailbox must not hide the others
                log.warning("usage_failed", mailbox=address, error=str(exc))
                u = self._usage.get(address, status.Usage())
            fresh[address] = status.Usage(u.messages, u.bytes, store.last_delivery(address))
        self._usage = fresh
        return fresh

    async def _refresh_usage_forever(self) -> None:
        while True:
            try:
                await self._refresh_usage()
            except Exception as exc:
                log.warning("usage_refresh_failed", error=str(exc))
            await asyncio.sleep(USAGE_REFRESH_SECONDS)

    async def status_document(self) -> status.MailstoreStatus:
        assert self.ctx is not None
        usage = await self._refresh_usage()
        now = time.time()
        return status.build(self._own_entries(), usage, ready=await self.ready(), now=now,
                            refusals=self.ctx.refusals, rules=await self._rules_status(), junk=self.ctx.junk)

    async def _rules_status(self) -> dict[str, dict]:
        """Each mailbox's mail rules (:func:`.rules.report.mailbox_rules`), for its status."""
        assert self.ctx is not None
        rules = self.ctx.rules
        if rules is None:
            return {}
        entries = self._own_entries()
        names = await asyncio.to_thread(lambda: [rules.user_script_name(e.address) for e in entries])
        now = rules.now()
        out = {}
        for entry, name in zip(entries, names):
            doc = mailbox_rules(entry, name, rules.log.get(entry.address), now)
            if doc is not None:
                out[entry.address.lower()] = doc
        return out

    async def quota_document(self, request) -> "web.Response":
        """``GET /quota?below=N``: the mailboxes with less room than N octets,
        which the relay reads to refuse at RCPT (:mod:`..backscatter.quota`)."""
        assert self.ctx is not None
        try:
            below = int(request.query.get("below", "0"))
        except ValueError:
            return web.json_response({"error": "below must be a number of octets"}, status=400)
        store = self.ctx.store

        async def used(address: str) -> int:
            try:
                return (await store.usage(address)).bytes
            except Exception:  # noqa: BLE001 - an unreadable mailbox is not listed (the relay then does not refuse)
                return 0
        return web.json_response(await quota.room_document(self._own_entries(), used, below))

    def _register_metrics(self, metrics: Registry) -> None:
        lmtp.register_metrics(metrics)
        metrics.counter("mailstore_sessions_total", "Sessions opened, by protocol", labels=("protocol",))
        metrics.counter("mailstore_literals_refused_total",
                        "IMAP literals refused with NO [LIMIT]: the literals budget was held")
        metrics.gauge("mailstore_sessions_active", "Sessions open now, by protocol", labels=("protocol",))
        metrics.counter("mailstore_logins_total", "Login attempts, by protocol and result (ok, failed)",
                        labels=("protocol", "result"))
        metrics.histogram("mailstore_imap_command_duration_seconds",
                          "Seconds from an IMAP command's last byte to its tagged reply, by command",
                          labels=("command",))
        metrics.watch_tls(self.ctx.tls if self.ctx else None)
        metrics.watch_volume("mail", self.data_dir)
        metrics.gauge_fn("mailstore_stored_bytes", "Octets stored, all mailboxes and folders",
                         lambda: [({}, sum(u.bytes for u in self._usage.values()))])
        metrics.gauge_fn("mailstore_stored_messages", "Messages stored, all mailboxes and folders",
                         lambda: [({}, sum(u.messages for u in self._usage.values()))])
        metrics.gauge_fn("mailstore_mailbox_bytes", "Octets stored per mailbox",
                         lambda: [({"mailbox": a}, u.bytes) for a, u in sorted(self._usage.items())])
        metrics.gauge_fn("mailstore_mailbox_quota_bytes", "Quota per mailbox (0: none)",
                         lambda: [({"mailbox": e.address.lower()}, e.quota_bytes)
                                  for e in self.ctx.directory.get()] if self.ctx else [])
