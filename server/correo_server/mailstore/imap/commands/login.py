"""Logging in (RFC 3501 6.2): LOGIN, and AUTHENTICATE with the PLAIN
(RFC 4616) and LOGIN SASL mechanisms, with an initial response on the
command line (SASL-IR, RFC 4959).

Before login the capabilities say how: ``AUTH=PLAIN AUTH=LOGIN`` where a
plaintext login is allowed (TLS, or loopback; :meth:`~..backend.Backend.
plaintext_allowed`), ``LOGINDISABLED`` where it is not.  A refusal for that
reason is ``NO [PRIVACYREQUIRED]``; a wrong password ``NO
[AUTHENTICATIONFAILED]``, a suspended mailbox ``NO [CONTACTADMIN]``.
"""
from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ....login import SaslError, decode_sasl_plain
from ....proxyauth import acting_as
from .. import responses as R
from ..reader import LineTooLong, Reader
from .base import Command, Parse, Registry, Reply, State, When, bad, no

if TYPE_CHECKING:
    from ..session import Session

MECHANISMS = ("PLAIN", "LOGIN")
_BASE64 = re.compile(rb"[A-Za-z0-9+/]+=*")


def _refuse_plaintext() -> Reply:
    return no("Plaintext authentication disallowed on non-secure (SSL/TLS) connections.", "PRIVACYREQUIRED")


@dataclass(frozen=True, kw_only=True)
class Login(Command):
    name = "LOGIN"
    states = State.NOT_AUTHENTICATED
    usage = "{cmd} needs a user name and a password"

    user: bytes
    password: bytes

    @classmethod
    def parse(cls, r: Reader, p: Parse) -> "Login":
        r.sp()
        user = r.astring("a user name")
        r.sp()
        return cls(tag=p.tag, user=user, password=r.astring("a password"))

    async def run(self, s: "Session") -> Reply:
        if not s.login_allowed():
            return _refuse_plaintext()
        try:
            user, password = self.user.decode("utf-8"), self.password.decode("utf-8")
        except UnicodeDecodeError:
            return await s.login_failed("invalid")
        return await s.login(user, password, "login")


@dataclass(frozen=True, kw_only=True)
class Authenticate(Command):
    name = "AUTHENTICATE"
    states = State.NOT_AUTHENTICATED
    usage = "{cmd} needs a mechanism name"

    mechanism: str
    initial: bytes | None  # SASL-IR; b"" for "="

    @classmethod
    def parse(cls, r: Reader, p: Parse) -> "Authenticate":
        r.sp()
        mech = r.atom("a mechanism").upper()
        initial = None
        if r.take(b" "):
            if r.take(b"="):
                initial = b""
            else:
                value = r.match(_BASE64)
                if value is None:
                    r.fail("Invalid base64 initial response")
                initial = value
        return cls(tag=p.tag, mechanism=mech, initial=initial)

    async def run(self, s: "Session") -> Reply:
        if self.mechanism not in MECHANISMS:
            return no("Unsupported authentication mechanism.")
        # correo serve proxy logs in for its users with its own credential
        # (correo_server.proxyauth); without TLS only where the shard has no key pair.
        proxy = getattr(s.ctx, "proxy", None)
        proxied = (self.mechanism == "PLAIN" and proxy is not None and s.ctx.tls is None
                   and proxy.accepts(self.initial))  # with a key pair the proxy comes over TLS
        if not s.login_allowed() and not proxied:
            return _refuse_plaintext()
        authzid = None
        try:
            if self.mechanism == "PLAIN":
                response = self.initial if self.initial is not None else await _challenge(s, b"")
                if response is None:
                    return bad("Authentication cancelled.")
                authz, user, password = decode_sasl_plain(response, allow_authzid=True)
                authzid = acting_as(authz, user)
            else:
                first = self.initial if self.initial is not None else await _challenge(s, b"Username:")
                if first is None:
                    return bad("Authentication cancelled.")
                second = await _challenge(s, b"Password:")
                if second is None:
                    return bad("Authentication cancelled.")
                user = base64.b64decode(first, validate=True).decode("utf-8")
                password = base64.b64decode(second, validate=True).decode("utf-8")
        except SaslError as exc:
            if str(exc) == "not valid base64":
                return bad("Invalid base64 data in the SASL response.")
            return await s.login_failed("invalid")  # e.g. another authorization identity
        except (ValueError, UnicodeDecodeError):
            return bad("Invalid base64 data in the SASL response.")
        except LineTooLong:
            return bad("Authentication answer line too long.")
        if authzid is not None:
            return await s.login(user, password, "plain-proxy", authzid=authzid)
        return await s.login(user, password, self.mechanism.lower())


async def _challenge(s: "Session", prompt: bytes) -> bytes | None:
    """Send ``+ <base64 prompt>`` and read the client's line (None: ``*``, cancelled)."""
    s.write(R.continuation(base64.b64encode(prompt).decode("ascii")) if prompt else b"+ \r\n")
    await s.ch.flush()
    line = (await s.ch.read_line()).rstrip(b"\r\n")
    return None if line == b"*" else line


def _auth_capabilities(s: "Session") -> list[str]:
    return [f"AUTH={m}" for m in MECHANISMS] if s.login_allowed() else ["LOGINDISABLED"]


def register(registry: Registry) -> None:
    registry.capability("SASL-IR", when=When.BEFORE_LOGIN, order=10)
    registry.capability(_auth_capabilities, when=When.BEFORE_LOGIN, order=12)
    registry.command(Login)
    registry.command(Authenticate)
