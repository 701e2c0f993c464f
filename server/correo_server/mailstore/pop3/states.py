"""The POP3 session as explicit states: AUTHORIZATION, TRANSACTION, UPDATE.

Each state is a class whose ``handle()`` takes a parsed
:class:`~.commands.Command` and returns a :class:`Reply`; the session moves
between states by replacing its ``state``.  Nothing here touches a socket or a
file: what a state needs from the outside (checking a password, opening and
locking the maildrop, reading a message, expunging) goes through the
:class:`Backend` interface, which :mod:`.server` implements over the store and
tests may implement over anything.  Reading lines, TLS and timeouts are the
server's job.

Response codes are those of RFC 2449 and RFC 3206: ``[AUTH]`` for
credentials (and for a suspended mailbox, whose owner can do nothing about
it but ask), ``[IN-USE]`` when another POP3 session holds the maildrop,
``[SYS/TEMP]`` when the store fails, ``[SYS/PERM]`` when it never will work.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from ...login import SaslError, decode_sasl_plain, wait_hint
from ...proxyauth import acting_as
from .commands import Command, CommandError
from .maildrop import Maildrop, NoSuchMessage
from .multiline import top

# Consecutive failed commands after which the connection is closed (Dovecot's figure).
MAX_BAD_COMMANDS = 20

IMPLEMENTATION = "correo"


class Then(enum.Enum):
    """What the server does after sending a reply."""

    CONTINUE = "continue"  # read the next command
    STARTTLS = "starttls"  # TLS handshake, then read the next command
    SASL = "sasl"  # send the "+ " continuation, read one SASL response line
    CLOSE = "close"  # close the connection


@dataclass
class Reply:
    ok: bool
    text: str
    lines: list[str] | None = None  # multi-line reply of text lines (LIST, UIDL, CAPA)
    body: bytes | None = None  # multi-line reply of message content (RETR, TOP)
    then: Then = Then.CONTINUE

    def status_line(self) -> bytes:
        head = "+OK" if self.ok else "-ERR"
        return (f"{head} {self.text}" if self.text else head).encode("utf-8") + b"\r\n"


def ok(text: str = "", **kw) -> Reply:
    return Reply(True, text, **kw)


def err(text: str, **kw) -> Reply:
    return Reply(False, text, **kw)


# -- what a session needs from outside -------------------------------------------

class MaildropLocked(Exception):
    """Another POP3 session holds this mailbox."""


class StoreUnavailable(Exception):
    """The store failed; the client may try again later."""


@dataclass(frozen=True)
class LoginOutcome:
    mailbox: str | None  # canonical address on success
    failure: str | None = None  # "invalid", "suspended"
    close: bool = False  # too many failures in this session
    retry_after: float = 0.0  # failures from the address repeat: wait this long (the reply says so)


class Backend(Protocol):
    def tls_offered(self) -> bool: """STLS is possible (a certificate is configured, TLS not active yet)."""
    def tls_active(self) -> bool: ...
    def plaintext_allowed(self) -> bool: """Login allowed on this connection now."""
    async def login(self, username: str, password: str, authzid: str | None = None) -> LoginOutcome:
        """``authzid``: PLAIN with another authorization identity (only the proxy's)."""
    def proxy_login(self, response: str) -> bool:
        """Is this SASL PLAIN response correo serve proxy's (allowed without TLS)?"""
    async def open_maildrop(self, mailbox: str) -> Maildrop: """Lock and list; raises MaildropLocked, StoreUnavailable."""
    async def read(self, mailbox: str, uid: int) -> bytes: """Raises StoreUnavailable, or NoSuchMessage when gone."""
    async def update(self, mailbox: str, retrieved: list[int], deleted: list[int]) -> None: """UPDATE state."""
    def release(self, mailbox: str) -> None: """Unlock (always called when the session ends)."""
    def retrieved(self, size: int) -> None: """A message was sent (metrics)."""


# -- the states ----------------------------------------------------------------------

class State:
    name = "?"
    allowed: frozenset[str] = frozenset()

    async def handle(self, session: "Pop3Session", cmd: Command) -> Reply:
        raise NotImplementedError


def _capabilities(session: "Pop3Session", authorization: bool) -> list[str]:
    caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
    backend = session.backend
    if authorization:
        if backend.plaintext_allowed():
            # RFC 2595 section 4: no USER (and no SASL PLAIN) where it would be refused.
            caps += ["USER", "SASL PLAIN"]
        if backend.tls_offered():
            caps.append("STLS")
    caps += ["EXPIRE NEVER", f"IMPLEMENTATION {IMPLEMENTATION}"]
    return caps


PLAINTEXT_REFUSED = "[AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."


class Authorization(State):
    name = "AUTHORIZATION"
    allowed = frozenset({"USER", "PASS", "AUTH", "APOP", "STLS", "CAPA", "QUIT"})

    def __init__(self) -> None:
        self.user: str | None = None

    async def handle(self, session: "Pop3Session", cmd: Command) -> Reply:
        backend = session.backend
        if cmd.name == "CAPA":
            return ok("Capability list follows", lines=_capabilities(session, True))
        if cmd.name == "QUIT":
            return ok(f"{IMPLEMENTATION} POP3 server signing off", then=Then.CLOSE)
        if cmd.name == "STLS":
            if backend.tls_active():
                return err("Already using TLS.")
            if not backend.tls_offered():
                return err("TLS is not available on this server.")
            self.user = None
            return ok("Begin TLS negotiation now.", then=Then.STARTTLS)
        if cmd.name == "APOP":
            return err("[AUTH] APOP is not supported; use USER/PASS or AUTH PLAIN.")
        if cmd.name == "USER":
            if not backend.plaintext_allowed():
                return err(PLAINTEXT_REFUSED)
            self.user = cmd.args[0]
            return ok("Send your password.")
        if cmd.name == "PASS":
            if self.user is None:
                return err("Send USER first.")
            user, self.user = self.user, None
            if not backend.plaintext_allowed():
                return err(PLAINTEXT_REFUSED)
            return await self._login(session, user, cmd.args[0])
        if cmd.name == "AUTH":
            self.user = None
            if not cmd.args:
                # Pre-RFC 5034 clients ask "AUTH" for the list of mechanisms.
                return ok("Supported SASL mechanisms follow", lines=["PLAIN"] if backend.plaintext_allowed() else [])
            if cmd.args[0] != "PLAIN":
                return err("Unsupported authentication mechanism.")
            # correo serve proxy logs in for its users with its own credential (correo_server.proxyauth)
            if not backend.plaintext_allowed() and not (len(cmd.args) > 1 and _proxy_login(backend, cmd.args[1])):
                return err(PLAINTEXT_REFUSED)
            if len(cmd.args) == 1:
                session.sasl_pending = True
                return ok("", then=Then.SASL)
            return await self.sasl_response(session, cmd.args[1])
        return err("Command not valid in this state; log in first.")

    async def sasl_response(self, session: "Pop3Session", response: str) -> Reply:
        session.sasl_pending = False
        response = response.strip()
        if response == "*":
            return err("Authentication cancelled.")
        if response == "=":  # RFC 5034: an empty initial response
            response = ""
        try:
            authzid, authcid, password = decode_sasl_plain(response, allow_authzid=True)
        except SaslError as exc:
            return err(f"[AUTH] Invalid SASL PLAIN response: {exc}.")
        return await self._login(session, authcid, password, acting_as(authzid, authcid))

    async def _login(self, session: "Pop3Session", username: str, password: str,
                     authzid: str | None = None) -> Reply:
        outcome = await (session.backend.login(username, password) if authzid is None
                         else session.backend.login(username, password, authzid))
        then = Then.CLOSE if outcome.close else Then.CONTINUE
        if outcome.mailbox is None or outcome.failure:
            if outcome.failure == "suspended":
                return err("[AUTH] This mailbox is suspended; ask your administrator.", then=then)
            if outcome.failure == "moving":
                return err("[SYS/TEMP] This mailbox is being moved to another server; try again in a moment.",
                           then=then)
            return err("[AUTH] Authentication failed." + wait_hint(outcome.retry_after), then=then)
        try:
            maildrop = await session.backend.open_maildrop(outcome.mailbox)
        except MaildropLocked:
            return err("[IN-USE] Mailbox is locked by another POP3 session.")
        except StoreUnavailable:
            return err("[SYS/TEMP] Mailbox cannot be opened now; try again later.")
        session.mailbox = outcome.mailbox
        session.state = Transaction(maildrop)
        count, octets = maildrop.stat()
        return ok(f"Logged in, {count} messages ({octets} octets).")


class Transaction(State):
    name = "TRANSACTION"
    allowed = frozenset({"STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL", "QUIT", "CAPA"})

    def __init__(self, maildrop: Maildrop) -> None:
        self.maildrop = maildrop
        self.retrieved: set[int] = set()  # UIDs sent with RETR (marked \Seen at UPDATE)

    async def handle(self, session: "Pop3Session", cmd: Command) -> Reply:
        drop = self.maildrop
        name = cmd.name
        try:
            if name == "STAT":
                count, octets = drop.stat()
                return ok(f"{count} {octets}")
            if name == "LIST":
                if cmd.args:
                    return ok(drop.scan_listing(cmd.number())[0])
                count, octets = drop.stat()
                return ok(f"{count} messages ({octets} octets)", lines=drop.scan_listing())
            if name == "UIDL":
                if cmd.args:
                    return ok(drop.uid_listing(cmd.number())[0])
                return ok("Unique-ID listing follows", lines=drop.uid_listing())
            if name in ("RETR", "TOP"):
                message = drop.get(cmd.number())
                try:
                    data = await session.backend.read(session.mailbox, message.uid)
                except NoSuchMessage:
                    return err("Message was removed by another session.")
                except StoreUnavailable:
                    return err("[SYS/TEMP] Message cannot be read now; try again later.")
                if name == "TOP":
                    return ok("Top of message follows", body=top(data, cmd.number(1)))
                self.retrieved.add(message.uid)
                session.backend.retrieved(len(data))
                return ok(f"{message.size} octets", body=data)
            if name == "DELE":
                number = cmd.number()
                drop.delete(number)
                return ok(f"Message {number} deleted.")
            if name == "RSET":
                drop.reset()
                count, octets = drop.stat()
                return ok(f"Maildrop has {count} messages ({octets} octets).")
            if name == "NOOP":
                return ok()
            if name == "CAPA":
                return ok("Capability list follows", lines=_capabilities(session, False))
            if name == "QUIT":
                return await self._update(session)
        except NoSuchMessage as exc:
            return err(f"{exc}.")
        return err("Command not valid in this state.")

    async def _update(self, session: "Pop3Session") -> Reply:
        """RFC 1939 section 6: remove the messages marked deleted, then sign off."""
        session.state = Update()
        deleted = self.maildrop.deleted_uids()
        try:
            await session.backend.update(session.mailbox, sorted(self.retrieved - set(deleted)), deleted)
        except StoreUnavailable:
            return err("[SYS/TEMP] Some deleted messages were not removed; try again later.", then=Then.CLOSE)
        left = len(self.maildrop) - len(deleted)
        return ok(f"{IMPLEMENTATION} POP3 server signing off ({left} messages left).", then=Then.CLOSE)


class Update(State):
    name = "UPDATE"

    async def handle(self, session: "Pop3Session", cmd: Command) -> Reply:
        return err("Session is ending.", then=Then.CLOSE)


@dataclass
class Pop3Session:
    """One connection's protocol state; :mod:`.server` feeds it lines."""

    backend: Backend
    state: State = field(default_factory=Authorization)
    mailbox: str | None = None  # canonical address once logged in
    sasl_pending: bool = False
    bad_commands: int = 0

    async def line(self, parsed: Command | CommandError) -> Reply:
        """Handle one command line, already parsed (or the parse error)."""
        if isinstance(parsed, CommandError):
            return self.bad(str(parsed))
        if parsed.name not in self.state.allowed:
            return self.bad(f"{parsed.name} is not valid in the {self.state.name} state.")
        reply = await self.state.handle(self, parsed)
        if reply.ok:
            self.bad_commands = 0
        return reply

    async def sasl_line(self, response: str) -> Reply:
        assert isinstance(self.state, Authorization)
        return await self.state.sasl_response(self, response)

    def bad(self, text: str) -> Reply:
        self.bad_commands += 1
        if self.bad_commands >= MAX_BAD_COMMANDS:
            return err("Too many bad commands; closing.", then=Then.CLOSE)
        return err(text)


def _proxy_login(backend, response) -> bool:
    """correo serve proxy's own login (:mod:`correo_server.proxyauth`), allowed without TLS."""
    check = getattr(backend, "proxy_login", None)
    return bool(check and check(response))
