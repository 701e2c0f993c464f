"""Checking a login, the same way for IMAP, POP3 and SMTP AUTH.

Password hashes are slow on purpose (argon2id, bcrypt), so the check runs in
a worker thread and never stalls the event loop.  A failure waits out the
:class:`~correo_server.guard.LoginThrottle` delay (short: 2 s at most)
before the caller answers, and the same answer is given for an unknown user
and a wrong password; once failures from the address repeat, the answer
says how long to wait (:func:`wait_hint`).
"""
from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass

from . import passwords
from .directory import Directory, MailboxEntry
from .guard import LoginThrottle
from .logincache import LoginCache


@dataclass(frozen=True)
class LoginResult:
    mailbox: MailboxEntry | None
    # None on success; "invalid" (unknown user or wrong password), "suspended",
    # or "moving" (a proxy login for a mailbox being moved to another shard)
    failure: str | None = None
    # After repeated failures from the client's address: the seconds it should
    # wait before trying again, which the reply says (:func:`wait_hint`).
    retry_after: float = 0.0
    # For the log only, never the client (which must not learn whether an
    # address exists or is suspended without its password): unknown_user,
    # no_password_set, empty_password, wrong_password, suspended (with the
    # right password) or suspended_wrong_password.
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.mailbox is not None and self.failure is None


async def check_login(directory: Directory, throttle: LoginThrottle, peer: str,
                      username: str, password: str, cache: LoginCache | None = None) -> LoginResult:
    """Look the user up (any address or alias of the mailbox) and check the
    password.  A suspended mailbox with the right password fails with
    ``"suspended"`` so that the server can say why; everything else that
    fails is ``"invalid"``.  With a :class:`~.logincache.LoginCache`, a
    password verified recently against the same stored hash is accepted
    without hashing it again (the directory entry, and so a suspension or a
    new hash, is read every time)."""
    entry = directory.lookup(username) if "@" in username else None
    ok = False
    # An empty password never logs in, whatever a hash says.
    if entry is not None and entry.password_hash and password:
        key = entry.address.lower()
        if cache is not None and cache.verified(key, entry.password_hash, password):
            ok = True
        else:
            ok = await asyncio.to_thread(passwords.verify, entry.password_hash, password)
            if ok and cache is not None and not entry.suspended:
                cache.remember(key, entry.password_hash, password)
        if entry.suspended and cache is not None:
            cache.forget(key)
    if ok and not entry.suspended:
        throttle.succeeded(peer)
        return LoginResult(entry)
    await asyncio.sleep(throttle.failed(peer))
    wait = throttle.retry_after(peer)
    if ok:
        return LoginResult(entry, "suspended", wait, "suspended")
    return LoginResult(None, "invalid", wait, _why(entry, password))


def _why(entry: MailboxEntry | None, password: str) -> str:
    """Why a login that is refused as "invalid" failed, for the log."""
    if entry is None:
        return "unknown_user"
    if entry.suspended:
        return "suspended_wrong_password"
    if not entry.password_hash:
        return "no_password_set"
    return "wrong_password" if password else "empty_password"


def wait_hint(retry_after: float) -> str:
    """What a failure reply adds when failures from the address repeat
    (empty otherwise): the client should wait before its next attempt."""
    if retry_after <= 0:
        return ""
    seconds = max(1, round(retry_after))
    return f" Too many failures from your address: wait {seconds} second{'s' if seconds != 1 else ''} before trying again."


class SaslError(ValueError):
    pass


def decode_sasl_plain(data: str | bytes, *, allow_authzid: bool = False) -> tuple[str, str, str]:
    """RFC 4616 PLAIN: base64 of ``authzid NUL authcid NUL password`` →
    (authzid, authcid, password).  Raises :class:`SaslError` on anything else,
    and on an authorization identity other than the user's own unless
    ``allow_authzid`` (the mailstore, for the proxy: :mod:`.proxyauth`)."""
    if isinstance(data, str):
        data = data.encode("ascii", "replace")
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SaslError("not valid base64") from None
    parts = raw.split(b"\x00")
    if len(parts) != 3 or not parts[1]:
        raise SaslError("not a PLAIN response (authzid NUL authcid NUL password)")
    try:
        authzid, authcid, password = (p.decode("utf-8") for p in parts)
    except UnicodeDecodeError:
        raise SaslError("not UTF-8") from None
    if authzid and authzid.lower() != authcid.lower() and not allow_authzid:
        raise SaslError("authorization identity differs from authentication identity")
    return authzid, authcid, password
