"""``ProxyService``: the proxy pod, as ``correo serve proxy`` runs it.

Listeners (``proxy:`` in ``correo.yaml``): imap and pop3 with STARTTLS/STLS,
imaps and pop3s (implicit TLS, when there is a key pair), managesieve; the
HTTP side port with /healthz, /readyz (listening, and the directory and the
proxy credential read), /metrics and /status (sessions open, shards
reachable).  ``stop()`` stops accepting and closes the sessions (clients
reconnect, through another proxy replica)."""
from __future__ import annotations

import asyncio
import functools
import ssl

from .. import logs
from ..config import Listen, ServerConfig
from ..directory import ReloadLog, watch_directory
from ..guard import ConnectionGate, LoginThrottle
from ..logincache import LoginCache
from ..metrics import Registry
from ..proxyauth import ProxyCredential
from ..sideport import SidePort
from ..tlsfiles import ServerTLS
from . import imap, lines, pop3, sieve
from .context import ProxyContext

log = logs.get(__name__)

SESSIONS = {"imap": imap.Session, "pop3": pop3.Session, "managesieve": sieve.Session}


class ProxyService:
    def __init__(self, config: ServerConfig, config_dir: str) -> None:
        self.config = config
        self.config_dir = config_dir
        self.ctx: ProxyContext | None = None
        self._servers: dict[str, asyncio.AbstractServer] = {}
        self._sideport: SidePort | None = None
        self._listening = False

    def _context(self) -> ProxyContext:
        cfg = self.config
        assert cfg.proxy is not None
        credential = ProxyCredential.from_config(cfg)
        if credential is None:
            raise ValueError("correo.yaml names no mailstore.proxySecretFile: the proxy cannot log in to the shards")
        directory = watch_directory(
            self.config_dir, cfg,
            on_error=lambda exc: log.warning("directory_reload_failed", error=str(exc)),
            on_reload=ReloadLog(log))
        return ProxyContext(config=cfg, directory=directory, credential=credential, tls=ServerTLS.from_config(cfg),
                            throttle=LoginThrottle.from_settings(cfg.auth), login_cache=LoginCache.from_settings(cfg.auth),
                            metrics=Registry(),
                            gate=ConnectionGate(cfg.proxy.max_connections, cfg.proxy.max_connections_per_client))

    async def start(self) -> dict[str, int]:
        ctx = self.ctx = self._context()
        p, m = self.config.proxy, self.config.mailstore
        assert p is not None
        self._register_metrics(ctx.metrics)
        plan: list[tuple[str, str, Listen, bool]] = []
        if m.imap_enabled:
            plan.append(("imap", "imap", p.imap, False))
            if ctx.tls is not None:
                plan.append(("imaps", "imap", p.imaps, True))
        if m.pop3_enabled:
            plan.append(("pop3", "pop3", p.pop3, False))
            if ctx.tls is not None:
                plan.append(("pop3s", "pop3", p.pop3s, True))
        if m.managesieve_enabled:
            plan.append(("managesieve", "managesieve", p.managesieve, False))
        try:
            for name, protocol, listen, implicit in plan:
                self._servers[name] = await asyncio.start_server(
                    functools.partial(self._handle, protocol, implicit), listen.host, listen.port,
                    ssl=ctx.tls.context if implicit and ctx.tls else None,
                    ssl_handshake_timeout=30 if implicit else None, limit=lines.MAX_LINE + 2, reuse_address=True)
            self._sideport = SidePort(p.http, "proxy", metrics=ctx.metrics, status=self.status_document,
                                      ready=lambda: self._listening)
            http_port = await self._sideport.start()
        except BaseException:
            await self.stop()
            raise
        ports = {name: s.sockets[0].getsockname()[1] for name, s in self._servers.items()}
        ports["http"] = http_port
        self._listening = True
        log.info("proxy_listening", ports=ports, shards=len(m.shards), tls=ctx.tls is not None)
        return ports

    async def _handle(self, protocol: str, implicit: bool, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        ctx = self.ctx
        assert ctx is not None and ctx.config.proxy is not None
        peername = writer.get_extra_info("peername")
        peer = peername[0] if isinstance(peername, tuple) else str(peername or "")
        refusal = ctx.gate.admit(peer) if ctx.gate is not None else None
        if refusal:
            words = {"imap": f"* BYE [UNAVAILABLE] {refusal.capitalize()}, try again later.",
                     "pop3": f"-ERR [SYS/TEMP] {refusal.capitalize()}, try again later.",
                     "managesieve": f'BYE (TRYLATER) "{refusal.capitalize()}, try again later."'}
            try:
                writer.write(words[protocol].encode() + b"\r\n")
                await writer.drain()
            except (ConnectionError, OSError):
                pass
            writer.close()
            return
        ctx.metrics.inc("proxy_sessions_total", protocol=protocol)
        ctx.metrics.inc("proxy_sessions_active", protocol=protocol)
        task = asyncio.current_task()
        ctx.sessions.add(task)
        session = SESSIONS[protocol](ctx, reader, writer, peer, implicit)
        try:
            await self._run(session)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, asyncio.TimeoutError, OSError):
            pass
        except Exception:  # noqa: BLE001 - one session's bug ends that session only
            log.exception("proxy_session_failed", protocol=protocol, peer=peer)
        finally:
            ctx.sessions.discard(task)
            ctx.metrics.inc("proxy_sessions_active", -1, protocol=protocol)
            if ctx.gate is not None:
                ctx.gate.release(peer)
            try:
                writer.close()
                await asyncio.wait_for(writer.wait_closed(), 5)
            except (ConnectionError, ssl.SSLError, asyncio.TimeoutError, OSError):
                pass

    async def _run(self, session) -> None:
        """The session, logged out when login takes longer than ``loginTimeoutSeconds``."""
        assert self.ctx is not None and self.ctx.config.proxy is not None
        limit = self.ctx.config.proxy.login_timeout_seconds
        run = asyncio.ensure_future(session.run())
        try:
            await asyncio.wait_for(asyncio.shield(run), limit)
        except asyncio.TimeoutError:
            if session.relaying:
                await run  # logged in: the relay's idle limit applies now
            else:
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)
        except asyncio.CancelledError:
            run.cancel()
            raise

    async def stop(self) -> None:
        self._listening = False
        if self._sideport is not None:
            await self._sideport.stop()
            self._sideport = None
        servers, self._servers = self._servers, {}
        for server in servers.values():
            server.close()
        if self.ctx is not None:
            tasks = list(self.ctx.sessions)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for server in servers.values():
            try:
                await asyncio.wait_for(server.wait_closed(), 5)
            except asyncio.TimeoutError:
                pass

    async def status_document(self) -> dict:
        assert self.ctx is not None
        return {"service": "proxy", "ready": self._listening, "shards": len(self.config.mailstore.shards),
                "sessions": len(self.ctx.sessions)}

    def _register_metrics(self, metrics: Registry) -> None:
        metrics.counter("proxy_sessions_total", "Client sessions opened, by protocol", labels=("protocol",))
        metrics.gauge("proxy_sessions_active", "Client sessions open now, by protocol", labels=("protocol",))
        metrics.counter("proxy_logins_total", "Logins, by protocol and result (ok, failed, unavailable)",
                        labels=("protocol", "result"))
        metrics.watch_tls(self.ctx.tls if self.ctx else None)
