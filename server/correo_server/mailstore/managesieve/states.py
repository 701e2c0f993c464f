"""The ManageSieve session as explicit states: non-authenticated and authenticated.

Each state is a class whose ``handle()`` takes a parsed
:class:`~.parser.Command` and returns a :class:`Reply` (the bytes to write
and what the server does next).  Nothing here touches a socket or a file:
logins, TLS facts and the scripts go through :class:`Backend`, which
:mod:`.backend` implements over the mailstore and tests may implement over
anything.  Scripts are compiled with correo's Sieve compiler; a script that
does not compile is refused with every error's line and column (RFC 5804
2.6), and nothing is stored.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from ...login import SaslError, decode_sasl_plain, wait_hint
from ...proxyauth import acting_as
from ...sieve import valid_script_name
from . import responses as r
from .parser import Command, ParseError
from .storage import ScriptError, ScriptInfo, name_fits

IMPLEMENTATION = "correo ManageSieve"
MAX_BAD_COMMANDS = 20


class Then(enum.Enum):
    CONTINUE = "continue"
    STARTTLS = "starttls"  # TLS handshake, then send session.after_tls()
    SASL = "sasl"  # read one SASL response line for session.sasl_line()
    CLOSE = "close"


@dataclass
class Reply:
    data: bytes
    then: Then = Then.CONTINUE


class StoreUnavailable(Exception):
    """The data folder failed; the client may try again later."""


@dataclass(frozen=True)
class LoginOutcome:
    mailbox: str | None  # canonical address on success
    failure: str | None = None  # "invalid", "suspended"
    close: bool = False  # too many failures in this session
    retry_after: float = 0.0  # failures from the address repeat: wait this long (the reply says so)


class Backend(Protocol):
    def tls_offered(self) -> bool: """STARTTLS is possible now."""
    def tls_active(self) -> bool: ...
    def plaintext_allowed(self) -> bool: """SASL PLAIN allowed on this connection now."""
    def sieve_extensions(self) -> str: ...
    def max_redirects(self) -> int: ...
    async def login(self, username: str, password: str, authzid: str | None = None) -> LoginOutcome:
        """``authzid``: PLAIN with another authorization identity (only the proxy's)."""
    def proxy_login(self, response) -> bool:
        """Is this SASL PLAIN response correo serve proxy's (allowed without TLS)?"""
    def check(self, name: str, data: bytes) -> str | None: """None if the script compiles, else the errors."""
    async def list_scripts(self, mailbox: str) -> list[ScriptInfo]: ...
    async def get_script(self, mailbox: str, name: str) -> bytes: ...
    async def check_space(self, mailbox: str, name: str, size: int) -> None: ...
    async def put_script(self, mailbox: str, name: str, data: bytes) -> None: ...
    async def delete_script(self, mailbox: str, name: str) -> None: ...
    async def rename_script(self, mailbox: str, old: str, new: str) -> None: ...
    async def set_active(self, mailbox: str, name: str) -> None: ...


class State:
    name = "?"
    allowed: frozenset[str] = frozenset()

    async def handle(self, session: "Session", cmd: Command) -> Reply:
        raise NotImplementedError


ANY = frozenset({"CAPABILITY", "LOGOUT", "NOOP"})


def _noop(cmd: Command) -> Reply:
    if cmd.args:
        return Reply(r.ok("Done", "TAG", cmd.args[0]))  # type: ignore[arg-type]
    return Reply(r.ok("NOOP completed"))


def _name_error(name: str) -> str | None:
    why = valid_script_name(name)
    if why:
        return why[0].upper() + why[1:] + "."
    if len(name) > 128:
        return "A script name is at most 128 characters."
    if not name_fits(name):
        return "That script name is too long for this server."
    return None


class NonAuthenticated(State):
    name = "non-authenticated"
    allowed = ANY | {"STARTTLS", "AUTHENTICATE"}

    async def handle(self, session: "Session", cmd: Command) -> Reply:
        backend = session.backend
        if cmd.name == "CAPABILITY":
            return Reply(session.capabilities() + r.ok("Capability completed."))
        if cmd.name == "NOOP":
            return _noop(cmd)
        if cmd.name == "LOGOUT":
            return Reply(r.ok("Logout completed."), Then.CLOSE)
        if cmd.name == "STARTTLS":
            if backend.tls_active():
                return Reply(r.no("TLS is already active."))
            if not backend.tls_offered():
                return Reply(r.no("TLS is not available on this server."))
            return Reply(r.ok("Begin TLS negotiation now."), Then.STARTTLS)
        if cmd.name == "AUTHENTICATE":
            mech = cmd.text(0).upper()
            if mech != "PLAIN":
                return Reply(r.no(f"Unsupported authentication mechanism {mech[:40]}; use PLAIN."))
            # correo serve proxy logs in for its users with its own credential (correo_server.proxyauth)
            if not backend.plaintext_allowed() and not (len(cmd.args) > 1 and _proxy_login(backend, cmd.args[1])):
                return Reply(r.no("Plaintext authentication disallowed on non-secure connections; "
                                  "use STARTTLS first.", "ENCRYPT-NEEDED"))
            if len(cmd.args) == 1:
                session.sasl_pending = True
                return Reply(r.string("") + b"\r\n", Then.SASL)
            return await self.sasl_response(session, cmd.args[1])  # type: ignore[arg-type]
        return Reply(r.no("Authenticate first."))

    async def sasl_response(self, session: "Session", response: bytes) -> Reply:
        session.sasl_pending = False
        if response.strip() == b"*":
            return Reply(r.no("Authentication cancelled."))
        try:
            authzid, authcid, password = decode_sasl_plain(response, allow_authzid=True)
        except SaslError as exc:
            return Reply(r.no(f"Invalid SASL PLAIN response: {exc}."))
        acting = acting_as(authzid, authcid)
        outcome = await (session.backend.login(authcid, password) if acting is None
                         else session.backend.login(authcid, password, acting))
        if outcome.mailbox is None or outcome.failure:
            text = ("This mailbox is suspended; ask your administrator." if outcome.failure == "suspended"
                    else "Authentication failed." + wait_hint(outcome.retry_after))
            if outcome.close:
                return Reply(r.bye("Too many failed logins."), Then.CLOSE)
            if outcome.failure == "moving":
                return Reply(r.no("This mailbox is being moved to another server; try again in a moment.",
                                  "TRYLATER"))
            return Reply(r.no(text))
        session.mailbox = outcome.mailbox
        session.state = Authenticated()
        return Reply(r.ok("Logged in."))


class Authenticated(State):
    name = "authenticated"
    allowed = ANY | {"HAVESPACE", "PUTSCRIPT", "CHECKSCRIPT", "LISTSCRIPTS", "SETACTIVE", "GETSCRIPT",
                     "DELETESCRIPT", "RENAMESCRIPT", "UNAUTHENTICATE"}

    async def handle(self, session: "Session", cmd: Command) -> Reply:
        name = cmd.name
        if name == "CAPABILITY":
            return Reply(session.capabilities() + r.ok("Capability completed."))
        if name == "NOOP":
            return _noop(cmd)
        if name == "LOGOUT":
            return Reply(r.ok("Logout completed."), Then.CLOSE)
        if name in ("AUTHENTICATE", "STARTTLS"):
            return Reply(r.no(f"{name} is not allowed once authenticated."))
        if name == "UNAUTHENTICATE":
            session.mailbox = None
            session.state = NonAuthenticated()
            return Reply(r.ok("Unauthenticate completed."))
        try:
            return await getattr(self, name.lower())(session, cmd)
        except ScriptError as exc:
            return Reply(r.no(str(exc), exc.code or None))
        except StoreUnavailable:
            return Reply(r.no("The script store is unavailable; try again later.", "TRYLATER"))

    def _name(self, cmd: Command, index: int) -> str:
        name = cmd.text(index)
        why = _name_error(name)
        if why:
            raise ParseError(why)
        return name

    async def havespace(self, session: "Session", cmd: Command) -> Reply:
        name = self._name(cmd, 0)
        await session.backend.check_space(session.mailbox or "", name, int(cmd.args[1]))  # type: ignore[arg-type]
        return Reply(r.ok("Putscript would succeed."))

    async def putscript(self, session: "Session", cmd: Command) -> Reply:
        name = self._name(cmd, 0)
        data = cmd.args[1]
        assert isinstance(data, bytes)
        if not data.strip():
            return Reply(r.no("An empty script is not a script; use DELETESCRIPT to remove one."))
        backend = session.backend
        await backend.check_space(session.mailbox or "", name, len(data))
        errors = backend.check(name, data)
        if errors:
            return Reply(r.no(errors))
        await backend.put_script(session.mailbox or "", name, data)
        return Reply(r.ok("Putscript completed."))

    async def checkscript(self, session: "Session", cmd: Command) -> Reply:
        data = cmd.args[0]
        assert isinstance(data, bytes)
        errors = session.backend.check("script", data)
        return Reply(r.no(errors) if errors else r.ok("Script is valid."))

    async def listscripts(self, session: "Session", cmd: Command) -> Reply:
        scripts = await session.backend.list_scripts(session.mailbox or "")
        out = b"".join(r.string(s.name) + (b" ACTIVE" if s.active else b"") + b"\r\n" for s in scripts)
        return Reply(out + r.ok("Listscripts completed."))

    async def setactive(self, session: "Session", cmd: Command) -> Reply:
        name = cmd.text(0)
        if name:
            name = self._name(cmd, 0)
        await session.backend.set_active(session.mailbox or "", name)
        return Reply(r.ok("Setactive completed." if name else "No script is active now."))

    async def getscript(self, session: "Session", cmd: Command) -> Reply:
        name = self._name(cmd, 0)
        data = await session.backend.get_script(session.mailbox or "", name)
        return Reply(b"{%d}\r\n" % len(data) + data + b"\r\n" + r.ok("Getscript completed."))

    async def deletescript(self, session: "Session", cmd: Command) -> Reply:
        await session.backend.delete_script(session.mailbox or "", self._name(cmd, 0))
        return Reply(r.ok("Deletescript completed."))

    async def renamescript(self, session: "Session", cmd: Command) -> Reply:
        await session.backend.rename_script(session.mailbox or "", self._name(cmd, 0), self._name(cmd, 1))
        return Reply(r.ok("Renamescript completed."))


class Session:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.state: State = NonAuthenticated()
        self.mailbox: str | None = None
        self.sasl_pending = False
        self.bad_commands = 0

    def capabilities(self) -> bytes:
        b = self.backend
        items: list[tuple[str, str | None]] = [("IMPLEMENTATION", IMPLEMENTATION),
                                               ("SASL", "PLAIN" if b.plaintext_allowed() else "")]
        if self.mailbox is None and b.tls_offered():
            items.append(("STARTTLS", None))  # RFC 5804 1.7: an empty SASL list comes with STARTTLS
        if self.mailbox is not None:
            items.append(("OWNER", self.mailbox))
        items += [("SIEVE", b.sieve_extensions()), ("MAXREDIRECTS", str(b.max_redirects())),
                  ("UNAUTHENTICATE", None), ("VERSION", "1.0")]
        return r.capabilities(items)

    def greeting(self) -> bytes:
        return self.capabilities() + r.ok(f"{IMPLEMENTATION} ready.")

    def after_tls(self) -> bytes:
        """RFC 5804 2.2: the capabilities again, now without STARTTLS."""
        self.state = NonAuthenticated()
        self.mailbox = None
        return self.capabilities() + r.ok("TLS negotiation successful.")

    def bad(self, message: str) -> Reply:
        self.bad_commands += 1
        if self.bad_commands >= MAX_BAD_COMMANDS:
            return Reply(r.bye("Too many invalid commands."), Then.CLOSE)
        return Reply(r.no(message))

    async def line(self, parsed: Command | ParseError) -> Reply:
        if isinstance(parsed, ParseError):
            return self.bad(str(parsed))
        if parsed.name not in self.state.allowed:
            if self.mailbox is None:
                return self.bad("Authenticate first.")
            return self.bad(f"{parsed.name} is not allowed now.")
        try:
            reply = await self.state.handle(self, parsed)
        except ParseError as exc:
            return self.bad(str(exc))
        self.bad_commands = 0
        return reply

    async def sasl_line(self, data: bytes) -> Reply:
        from .parser import parse_sasl_response
        try:
            response = parse_sasl_response(data)
        except ParseError as exc:
            self.sasl_pending = False
            return Reply(r.no(f"Invalid SASL response: {exc}"))
        state = self.state
        assert isinstance(state, NonAuthenticated)
        return await state.sasl_response(self, response)


def _proxy_login(backend, response) -> bool:
    """correo serve proxy's own login (:mod:`correo_server.proxyauth`), allowed without TLS."""
    check = getattr(backend, "proxy_login", None)
    return bool(check and check(response))
