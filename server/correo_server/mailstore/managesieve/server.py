"""The ManageSieve listener: sockets, literals, TLS and timeouts around a :class:`~.states.Session`.

One asyncio task per connection reads a command (a line, and the literals it
announces), parses it (:mod:`.parser`), lets the session's state decide
(:mod:`.states`) and writes the reply.  :class:`~.backend.StoreBackend` is
what the states ask of the mailstore.

Limits, as IMAP's: connections counted by ``ctx.managesieve_gate`` (total and
per client address); lines longer than ``mailstore.maxLineLength``, and never
more than 4 KB (:data:`~correo_server.guard.PRELOGIN_INPUT_BYTES`: a quoted
string holds at most 1024 octets, RFC 5804 4, scripts come as literals),
dropped and refused; before login a literal over 4 KB closes the connection
(only AUTHENTICATE's answer may come as one); after it, a literal larger than
a script may be is read away and refused with ``QUOTA/MAXSIZE`` (beyond
:data:`MAX_LITERAL` the connection is closed), and so is a command whose
literals add up to more than a script and a few lines;
a session idle for ``mailstore.imapIdleTimeoutSeconds`` (RFC 5804 1.2: at
least 30 minutes once authenticated) is closed with ``BYE``, and one that has
not logged in ``auth.loginTimeoutSeconds`` after connecting (3 minutes, as
Dovecot's login processes) too.
"""
from __future__ import annotations

import asyncio
import functools
import itertools
import ssl
import weakref

from ... import logs
from ...config import Listen
from ...guard import PRELOGIN_INPUT_BYTES
from ..context import MailstoreContext
from ..linereader import LineTooLong, read_line
from . import parser
from . import responses as r
from .backend import StoreBackend, register_metrics
from .states import Reply, Session, Then
from .storage import MAX_SCRIPT_BYTES

log = logs.get(__name__)

TLS_HANDSHAKE_TIMEOUT = 30.0
MAX_LITERAL = 64 * 1024 * 1024  # beyond this, a literal is an attack: close
_session_ids = itertools.count(1)
_connections: "weakref.WeakKeyDictionary[asyncio.Server, set[ManageSieveConnection]]" = weakref.WeakKeyDictionary()


class LiteralTooLarge(Exception):
    def __init__(self, size: int, close: bool = False) -> None:
        self.size = size
        self.close = close  # not read: the connection cannot go on


class ManageSieveConnection:
    def __init__(self, ctx: MailstoreContext, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, peer: str) -> None:
        self.ctx = ctx
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.sid = next(_session_ids)
        self.log = log.bind(session=self.sid, peer=peer, protocol="managesieve")
        self.backend = StoreBackend(ctx, peer, tls_active=self.tls_active, log=self.log)
        self.session = Session(self.backend)
        self.max_line = min(ctx.config.mailstore.max_line_length, PRELOGIN_INPUT_BYTES)
        self.max_script = MAX_SCRIPT_BYTES
        self.idle = float(ctx.config.mailstore.imap_idle_timeout_seconds)
        self.login_deadline = asyncio.get_running_loop().time() + ctx.config.auth.login_timeout_seconds
        self.task: asyncio.Task | None = None

    def tls_active(self) -> bool:
        return self.writer.get_extra_info("ssl_object") is not None

    # -- reading ----------------------------------------------------------------------
    async def read_line(self) -> bytes | None:
        """One line, CRLF included; None at end of stream (linereader)."""
        return await read_line(self.reader, self.max_line)

    async def _skip(self, size: int) -> None:
        while size > 0:
            chunk = await self.reader.readexactly(min(size, 64 * 1024))
            size -= len(chunk)

    async def read_command(self) -> bytes | None:
        """A whole command with its literals; None at end of stream."""
        line = await self.read_line()
        if line is None:
            return None
        parts = [line]
        logged_in = self.session.mailbox is not None
        total = 0
        while (size := parser.literal_length(line)) is not None:
            if not logged_in and size > PRELOGIN_INPUT_BYTES:
                raise LiteralTooLarge(size, close=True)
            if size > self.max_script + 4096:
                if size > MAX_LITERAL:
                    raise LiteralTooLarge(size, close=True)
                await self._skip(size)
                await self.read_line()
                raise LiteralTooLarge(size)
            total += size + len(line)
            if total > self.max_script + 4 * PRELOGIN_INPUT_BYTES:
                raise LiteralTooLarge(total, close=True)
            parts.append(await self.reader.readexactly(size))
            line = await self.read_line()
            if line is None:
                return None
            parts.append(line)
        return b"".join(parts)

    # -- the loop -----------------------------------------------------------------------
    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        async with asyncio.timeout(self.idle):  # a client that stops reading is idle too
            await self.writer.drain()

    async def run(self) -> None:
        await self.write(self.session.greeting())
        loop = asyncio.get_running_loop()
        while True:
            logging_in = self.session.mailbox is None
            try:
                async with asyncio.timeout_at(min(loop.time() + self.idle, self.login_deadline) if logging_in
                                              else loop.time() + self.idle):
                    data = await self.read_command()
            except TimeoutError:
                if logging_in and loop.time() >= self.login_deadline:
                    self.log.info("managesieve_login_timeout")
                    await self.write(r.bye(f"Disconnected: no login within "
                                           f"{self.ctx.config.auth.login_timeout_seconds} seconds."))
                    return
                self.log.info("managesieve_idle_timeout")
                await self.write(r.bye("Disconnected for inactivity."))
                return
            except LineTooLong:
                self.session.sasl_pending = False
                reply = self.session.bad(f"Line too long (limit {self.max_line} octets).")
            except LiteralTooLarge as exc:
                if exc.close:
                    self.log.info("managesieve_literal_refused", size=exc.size, logged_in=not logging_in)
                    await self.write(r.bye(f"A literal of {exc.size} octets is not acceptable"
                                           f"{' before login' if logging_in else ''}."))
                    return
                reply = Reply(r.no(f"A script may hold at most {self.max_script} octets.", "QUOTA/MAXSIZE"))
            else:
                if data is None:
                    return
                reply = await self.answer(data)
            await self.write(reply.data)
            if reply.then is Then.CLOSE:
                return
            if reply.then is Then.STARTTLS:
                if not await self.start_tls():
                    return
                await self.write(self.session.after_tls())

    async def answer(self, data: bytes) -> Reply:
        if self.session.sasl_pending:
            return await self.session.sasl_line(data)
        try:
            parsed: parser.Command | parser.ParseError = parser.parse(data)
        except parser.ParseError as exc:
            parsed = exc
        return await self.session.line(parsed)

    async def start_tls(self) -> bool:
        # Anything pipelined after STARTTLS came in plaintext: drop it (RFC 2595 section 4).
        buffered = getattr(self.reader, "_buffer", None)
        if buffered:
            buffered.clear()
        assert self.ctx.tls is not None
        try:
            await self.writer.start_tls(self.ctx.tls.context, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
        except (ssl.SSLError, ConnectionError, OSError, TimeoutError) as exc:
            self.log.info("managesieve_tls_failed", error=str(exc))
            return False
        self.session = Session(self.backend)  # forget everything said before TLS
        return True


async def _handle(ctx: MailstoreContext, live: set, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter) -> None:
    peername = writer.get_extra_info("peername")
    peer = peername[0] if isinstance(peername, tuple) else str(peername or "")
    gate = getattr(ctx, "managesieve_gate", None)
    refusal = gate.admit(peer) if gate is not None else None
    if refusal:
        try:
            writer.write(r.bye(f"{refusal.capitalize()}, try again later.", "TRYLATER"))
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()
        return
    ctx.metrics.inc("mailstore_sessions_total", protocol="managesieve")
    ctx.metrics.inc("mailstore_sessions_active", protocol="managesieve")
    conn = ManageSieveConnection(ctx, reader, writer, peer)
    conn.task = asyncio.current_task()
    conn.log.info("managesieve_session_start", tls=conn.tls_active())
    live.add(conn)
    try:
        await conn.run()
    except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, TimeoutError):
        pass
    except Exception:
        conn.log.exception("managesieve_session_failed")
    finally:
        live.discard(conn)
        ctx.metrics.inc("mailstore_sessions_active", -1, protocol="managesieve")
        if gate is not None:
            gate.release(peer)
        try:
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), 5)
        except (ConnectionError, ssl.SSLError, TimeoutError, OSError):
            pass
        conn.log.info("managesieve_session_end")


async def serve_managesieve(ctx: MailstoreContext, listen: Listen) -> asyncio.Server:
    """Start a ManageSieve listener (STARTTLS when the context has a certificate)."""
    register_metrics(ctx.metrics)
    live: set[ManageSieveConnection] = set()
    server = await asyncio.start_server(
        functools.partial(_handle, ctx, live), listen.host, listen.port,
        limit=min(ctx.config.mailstore.max_line_length, PRELOGIN_INPUT_BYTES) + 2, reuse_address=True)
    _connections[server] = live
    return server


async def shutdown(server: asyncio.Server) -> None:
    """Stop accepting and end every session of this listener with ``BYE``."""
    server.close()
    conns = list(_connections.get(server, ()))
    for conn in conns:
        try:
            conn.writer.write(r.bye("Server is shutting down, try again later.", "TRYLATER"))
        except (ConnectionError, RuntimeError):
            pass
        conn.writer.close()
    tasks = [c.task for c in conns if c.task is not None and not c.task.done()]
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=5)
        for task in pending:
            task.cancel()
    await server.wait_closed()
