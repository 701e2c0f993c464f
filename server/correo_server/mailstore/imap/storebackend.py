"""The IMAP :class:`~.backend.Backend` over the mailstore: logins through
:func:`correo_server.login.check_login` (the directory, the throttle,
the verified-login cache, suspended mailboxes refused) and the plaintext rule of
:func:`correo_server.guard.plaintext_login_allowed`; mailboxes from the
:class:`~..store.Store` (whose Mailbox and Folder satisfy the interface)."""
from __future__ import annotations

from ...guard import plaintext_login_allowed
from ...login import check_login
from ...proxyauth import login_as
from ..context import MailstoreContext
from .backend import LoginResult, Mailbox


class StoreBackend:
    def __init__(self, ctx: MailstoreContext) -> None:
        self.ctx = ctx

    def plaintext_allowed(self, peer: str, tls_active: bool) -> bool:
        return plaintext_login_allowed(self.ctx.config.auth, peer, tls_active)

    async def login(self, peer: str, user: str, password: str) -> LoginResult:
        d = self.ctx.directory
        directory = d.get() if hasattr(d, "get") else d
        result = await check_login(directory, self.ctx.throttle, peer, user, password, self.ctx.login_cache)
        if not result.ok:
            return LoginResult(None, result.failure or "invalid", result.retry_after, result.detail)
        assert result.mailbox is not None
        return LoginResult(result.mailbox.address)

    async def login_as(self, peer: str, authzid: str, authcid: str, password: str) -> LoginResult:
        """A login of ``correo serve proxy`` for ``authzid`` (:mod:`correo_server.proxyauth`)."""
        d = self.ctx.directory
        directory = d.get() if hasattr(d, "get") else d
        result = await login_as(self.ctx.proxy, self.ctx.config, directory, self.ctx.throttle, peer,
                                authzid, authcid, password, moving=self.ctx.store.fenced)
        if not result.ok:
            return LoginResult(None, result.failure or "invalid")
        assert result.mailbox is not None
        return LoginResult(result.mailbox.address)

    async def mailbox(self, address: str) -> Mailbox:
        return await self.ctx.store.mailbox(address)

    def cache_key(self, mailbox: Mailbox) -> str:
        return str(getattr(mailbox, "root", mailbox.address))
