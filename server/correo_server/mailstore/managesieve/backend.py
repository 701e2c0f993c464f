"""What a ManageSieve session needs from the mailstore, over the real data folder.

Implements :class:`~.states.Backend` for one connection: logins through
:func:`correo_server.login.check_login` (the growing delay per failing client
address of :class:`~correo_server.guard.LoginThrottle`, suspended mailboxes
refused, the same answer for an unknown user and a wrong password), the
plaintext rule of :func:`correo_server.guard.plaintext_login_allowed`,
compiling with :func:`correo_server.sieve.compile_script`, and the scripts
of :mod:`.storage`, whose file work runs on the store's worker threads.
"""
from __future__ import annotations

from typing import Callable

from ...guard import plaintext_login_allowed
from ...login import check_login
from ...proxyauth import login_as
from ...metrics import Registry
from ...sieve import CAPABILITIES, Limits, SieveError, compile_script
from ..context import MailstoreContext
from .states import LoginOutcome, StoreUnavailable
from .storage import ScriptError, ScriptInfo, ScriptStorage


def register_metrics(metrics: Registry) -> None:
    metrics.counter("mailstore_sessions_total", "Sessions opened, by protocol")
    metrics.gauge("mailstore_sessions_active", "Sessions open now, by protocol")
    metrics.counter("mailstore_logins_total", "Login attempts, by protocol and result (ok, failed)")
    metrics.counter("mailstore_managesieve_scripts_total",
                    "ManageSieve script changes, by operation (put, delete, rename, activate) and result")


class StoreBackend:
    def __init__(self, ctx: MailstoreContext, peer: str, *, tls_active: Callable[[], bool], log) -> None:
        self.ctx = ctx
        self.peer = peer
        self._tls_active = tls_active
        self.log = log
        self.failures = 0

    # -- TLS and the plaintext rule ------------------------------------------------
    def tls_active(self) -> bool:
        return self._tls_active()

    def tls_offered(self) -> bool:
        return self.ctx.tls is not None and not self._tls_active()

    def plaintext_allowed(self) -> bool:
        return plaintext_login_allowed(self.ctx.config.auth, self.peer, self._tls_active())

    def sieve_extensions(self) -> str:
        return " ".join(CAPABILITIES)

    def max_redirects(self) -> int:
        return Limits().max_redirects

    # -- login ------------------------------------------------------------------------
    def proxy_login(self, response) -> bool:
        # without TLS only where the shard has no key pair (else the proxy comes over TLS)
        return self.ctx.proxy is not None and self.ctx.tls is None and self.ctx.proxy.accepts(response)

    async def login(self, username: str, password: str, authzid: str | None = None) -> LoginOutcome:
        if authzid is not None:
            result = await login_as(self.ctx.proxy, self.ctx.config, self.ctx.directory.get(), self.ctx.throttle,
                                    self.peer, authzid, username, password, moving=self.ctx.store.fenced)
        else:
            result = await check_login(self.ctx.directory.get(), self.ctx.throttle, self.peer, username, password)
        if result.ok:
            assert result.mailbox is not None
            self.ctx.metrics.inc("mailstore_logins_total", protocol="managesieve", result="ok")
            self.log.info("managesieve_login", user=result.mailbox.address)
            return LoginOutcome(result.mailbox.address.lower())
        self.failures += 1
        self.ctx.metrics.inc("mailstore_logins_total", protocol="managesieve", result="failed")
        self.log.info("managesieve_login_failed", user=username[:200], reason=result.detail or result.failure,
                      failures=self.failures)
        close = self.failures >= max(self.ctx.config.auth.max_failures_per_session, 1)
        return LoginOutcome(None, result.failure or "invalid", close=close, retry_after=result.retry_after)

    # -- scripts ------------------------------------------------------------------------
    def check(self, name: str, data: bytes) -> str | None:
        try:
            compile_script(data, name)
        except SieveError as exc:
            return "\r\n".join(d.human() for d in exc.diagnostics)
        return None

    def _storage(self, mailbox: str) -> ScriptStorage:
        return ScriptStorage.for_mailbox(self.ctx.store.data_dir, mailbox)

    async def _io(self, op: str, mailbox: str, fn, *args):
        try:
            return await self.ctx.store.io(fn, *args)
        except ScriptError:
            if op:
                self.ctx.metrics.inc("mailstore_managesieve_scripts_total", operation=op, result="refused")
            raise
        except OSError as exc:
            self.log.error("managesieve_store_failed", user=mailbox, operation=op or "read", error=str(exc))
            raise StoreUnavailable(str(exc)) from exc

    def _done(self, op: str, mailbox: str, **fields) -> None:
        self.ctx.metrics.inc("mailstore_managesieve_scripts_total", operation=op, result="ok")
        self.log.info(f"managesieve_{op}", user=mailbox, **fields)

    async def list_scripts(self, mailbox: str) -> list[ScriptInfo]:
        return await self._io("", mailbox, self._storage(mailbox).list)

    async def get_script(self, mailbox: str, name: str) -> bytes:
        return await self._io("", mailbox, self._storage(mailbox).get, name)

    async def check_space(self, mailbox: str, name: str, size: int) -> None:
        await self._io("", mailbox, self._storage(mailbox).check_space, name, size)

    async def put_script(self, mailbox: str, name: str, data: bytes) -> None:
        await self._io("put", mailbox, self._storage(mailbox).put, name, data)
        self._done("put", mailbox, script=name, size=len(data))

    async def delete_script(self, mailbox: str, name: str) -> None:
        await self._io("delete", mailbox, self._storage(mailbox).delete, name)
        self._done("delete", mailbox, script=name)

    async def rename_script(self, mailbox: str, old: str, new: str) -> None:
        await self._io("rename", mailbox, self._storage(mailbox).rename, old, new)
        self._done("rename", mailbox, script=old, to=new)

    async def set_active(self, mailbox: str, name: str) -> None:
        await self._io("activate", mailbox, self._storage(mailbox).set_active, name)
        self._done("activate", mailbox, script=name or None)
