"""What a POP3 session needs from the mailstore, over the real store.

Implements :class:`~.states.Backend` for one connection: logins through
:func:`correo_server.login.check_login` (growing delay per failing client,
suspended mailboxes refused), the plaintext rule of
:func:`correo_server.guard.plaintext_login_allowed`, the maildrop lock
(``Mailbox.try_lock("pop3", ...)`` of :mod:`..store`, held from login to the
end of the session, so a second POP3 session gets ``[IN-USE]``), reading
messages, and the UPDATE state (messages retrieved become ``\\Seen`` for
IMAP, as Dovecot does; messages marked deleted are expunged, and IMAP
sessions with the INBOX selected are told).
"""
from __future__ import annotations

from typing import Callable

from ...guard import plaintext_login_allowed
from ...login import check_login
from ...proxyauth import login_as
from ...metrics import Registry
from .. import store as storemod
from ..context import MailstoreContext
from .maildrop import Maildrop, NoSuchMessage
from .states import LoginOutcome, MaildropLocked, StoreUnavailable


def register_metrics(metrics: Registry) -> None:
    metrics.counter("mailstore_sessions_total", "Sessions opened, by protocol")
    metrics.gauge("mailstore_sessions_active", "Sessions open now, by protocol")
    metrics.counter("mailstore_logins_total", "Login attempts, by protocol and result (ok, failed)")
    metrics.counter("mailstore_pop3_messages_retrieved_total", "Messages sent with POP3 RETR")
    metrics.counter("mailstore_pop3_bytes_retrieved_total", "Octets of messages sent with POP3 RETR")
    metrics.counter("mailstore_pop3_messages_deleted_total", "Messages removed in the POP3 UPDATE state")


def wire_size(info: storemod.MessageInfo) -> int:
    """The size RETR sends (bare LFs as CRLF): the ``W=`` of the file name
    when the store wrote one, else the stored size."""
    for part in info.base.split(",")[1:]:
        if part.startswith("W=") and part[2:].isdigit():
            return int(part[2:])
    return info.size


class StoreBackend:
    def __init__(self, ctx: MailstoreContext, peer: str, *, tls_active: Callable[[], bool], log) -> None:
        self.ctx = ctx
        self.peer = peer
        self._tls_active = tls_active
        self.log = log
        self.failures = 0
        self._mailbox: storemod.Mailbox | None = None
        self._inbox: storemod.Folder | None = None

    # -- TLS and the plaintext rule ------------------------------------------------
    def tls_active(self) -> bool:
        return self._tls_active()

    def tls_offered(self) -> bool:
        return self.ctx.tls is not None and not self._tls_active()

    def plaintext_allowed(self) -> bool:
        return plaintext_login_allowed(self.ctx.config.auth, self.peer, self._tls_active())

    # -- login -----------------------------------------------------------------------
    def proxy_login(self, response: str) -> bool:
        # without TLS only where the shard has no key pair (else the proxy comes over TLS)
        return self.ctx.proxy is not None and self.ctx.tls is None and self.ctx.proxy.accepts(response)

    async def login(self, username: str, password: str, authzid: str | None = None) -> LoginOutcome:
        if authzid is not None:
            result = await login_as(self.ctx.proxy, self.ctx.config, self.ctx.directory.get(), self.ctx.throttle,
                                    self.peer, authzid, username, password, moving=self.ctx.store.fenced)
        else:
            result = await check_login(self.ctx.directory.get(), self.ctx.throttle, self.peer, username, password,
                                       self.ctx.login_cache)
        if result.ok:
            assert result.mailbox is not None
            self.ctx.metrics.inc("mailstore_logins_total", protocol="pop3", result="ok")
            self.log.info("pop3_login", user=result.mailbox.address)
            return LoginOutcome(result.mailbox.address.lower())
        self.failures += 1
        self.ctx.metrics.inc("mailstore_logins_total", protocol="pop3", result="failed")
        self.log.info("pop3_login_failed", user=username[:200], reason=result.detail or result.failure,
                      failures=self.failures)
        close = self.failures >= max(self.ctx.config.auth.max_failures_per_session, 1)
        return LoginOutcome(None, result.failure or "invalid", close=close, retry_after=result.retry_after)

    # -- the maildrop ------------------------------------------------------------------
    async def open_maildrop(self, mailbox: str) -> Maildrop:
        try:
            mbox = await self.ctx.store.mailbox(mailbox)
        except (storemod.StoreError, OSError) as exc:
            self.log.error("pop3_open_failed", user=mailbox, error=str(exc))
            raise StoreUnavailable(str(exc)) from exc
        if not mbox.try_lock("pop3", self):
            raise MaildropLocked(mailbox)
        try:
            inbox = await mbox.folder("INBOX")
        except (storemod.StoreError, OSError) as exc:
            mbox.unlock("pop3", self)
            self.log.error("pop3_open_failed", user=mailbox, error=str(exc))
            raise StoreUnavailable(str(exc)) from exc
        self._mailbox, self._inbox = mbox, inbox
        return Maildrop(inbox.uidvalidity, [(m.uid, wire_size(m)) for m in inbox.messages()])

    async def read(self, mailbox: str, uid: int) -> bytes:
        assert self._inbox is not None
        try:
            return await self._inbox.read(uid)
        except storemod.MessageGone as exc:
            raise NoSuchMessage(str(exc)) from exc
        except (storemod.StoreError, OSError) as exc:
            self.log.error("pop3_read_failed", user=mailbox, uid=uid, error=str(exc))
            raise StoreUnavailable(str(exc)) from exc

    def retrieved(self, size: int) -> None:
        self.ctx.metrics.inc("mailstore_pop3_messages_retrieved_total")
        self.ctx.metrics.inc("mailstore_pop3_bytes_retrieved_total", size)

    async def update(self, mailbox: str, retrieved: list[int], deleted: list[int]) -> None:
        assert self._inbox is not None
        try:
            if retrieved:
                await self._inbox.store(retrieved, ["\\Seen"], "add", origin=self)
            if deleted:
                gone = await self._inbox.expunge(deleted, origin=self)
                self.ctx.metrics.inc("mailstore_pop3_messages_deleted_total", len(gone))
                self.log.info("pop3_update", user=mailbox, deleted=len(gone))
        except (storemod.StoreError, OSError) as exc:
            self.log.error("pop3_update_failed", user=mailbox, error=str(exc))
            raise StoreUnavailable(str(exc)) from exc

    def release(self, mailbox: str) -> None:
        if self._mailbox is not None:
            self._mailbox.unlock("pop3", self)
        self._mailbox = self._inbox = None

    def end_session(self) -> None:
        """The connection is gone, however it ended: give the maildrop back."""
        self.release("")
