"""The proxy credential: how ``correo serve proxy`` logs in to a mailstore
shard on a user's behalf, and how the shard checks it.

The proxy checks the user's password itself (:func:`correo_server.login.check_login`,
with the same failed-login delays); to the shard it then sends SASL PLAIN
(RFC 4616) with the user as the *authorization* identity, ``proxyUser``
(``correo-proxy``) as the authentication identity and the shared secret of
``mailstore.proxySecretFile`` as the password.  The user's password never
travels again.  A shard accepts that login for any mailbox it holds.  When
the stack has a key pair the proxy first does STARTTLS with the shard and
checks that the shard shows the stack's own certificate (pinned: pod names
are not on it), so the credential never crosses the network in the clear;
a shard without a key pair accepts it in plain text (the NetworkPolicy
admits only proxy pods to the shards' client ports).  Any other
authorization identity that differs from the authentication identity is
refused, as before.

Pure but for reading the secret file; the IMAP, POP3 and ManageSieve
sessions of the mailstore call :meth:`ProxyCredential.accepts` (before the
plaintext rule) and :func:`login_as`.
"""
from __future__ import annotations

import asyncio
import base64
import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Container

from . import shards
from .config import ServerConfig
from .directory import Directory
from .guard import LoginThrottle
from .login import LoginResult, SaslError, decode_sasl_plain


@dataclass(frozen=True)
class ProxyCredential:
    user: str
    secret: str

    @classmethod
    def from_config(cls, cfg: ServerConfig) -> "ProxyCredential | None":
        """The credential named by ``mailstore.proxySecretFile``; None when
        there is none (no proxy logins).  An empty file is an error."""
        name = cfg.mailstore.proxy_secret_file
        if not name:
            return None
        secret = Path(cfg.path(name)).read_text(encoding="utf-8").strip()
        if len(secret) < 16:
            raise ValueError(f"{cfg.path(name)}: the proxy secret is missing or shorter than 16 characters")
        return cls(cfg.mailstore.proxy_user, secret)

    def matches(self, authcid: str, password: str) -> bool:
        return (hmac.compare_digest(authcid.encode("utf-8"), self.user.encode("utf-8"))
                & hmac.compare_digest(password.encode("utf-8"), self.secret.encode("utf-8")))

    def accepts(self, response: bytes | str | None) -> bool:
        """Is this SASL PLAIN response a proxy login (a user, this credential)?"""
        if not response:
            return False
        try:
            authzid, authcid, password = decode_sasl_plain(response, allow_authzid=True)
        except SaslError:
            return False
        return bool(authzid) and self.matches(authcid, password)

    def plain_response(self, user: str) -> str:
        """The base64 PLAIN response the proxy sends to log in as ``user``."""
        raw = b"\0".join((user.encode("utf-8"), self.user.encode("utf-8"), self.secret.encode("utf-8")))
        return base64.b64encode(raw).decode("ascii")


def acting_as(authzid: str, authcid: str) -> str | None:
    """The authorization identity when it is not the authenticating user's own."""
    return authzid if authzid and authzid.lower() != authcid.lower() else None


async def login_as(credential: ProxyCredential | None, cfg: ServerConfig, directory: Directory,
                   throttle: LoginThrottle, peer: str, authzid: str, authcid: str, password: str,
                   *, moving: Container[str] = ()) -> LoginResult:
    """A PLAIN login with an authorization identity: only the proxy's, for a
    mailbox of this shard that is not being moved away (``moving``: the
    store's fenced mailboxes; the proxy then answers ``[UNAVAILABLE]``).
    Failures cost the usual delay."""
    if credential is None or not credential.matches(authcid, password):
        await asyncio.sleep(throttle.failed(peer))
        return LoginResult(None, "invalid")
    entry = directory.lookup(authzid) if "@" in authzid else None
    if entry is None or not shards.owns(cfg, entry.shard_id):
        return LoginResult(None, "invalid")
    if entry.address.lower() in moving:  # the proxy passes on "try again in a moment"
        return LoginResult(entry, "moving", detail="mailbox_moving")
    if entry.suspended:
        return LoginResult(entry, "suspended")
    return LoginResult(entry)
