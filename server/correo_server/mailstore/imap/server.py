"""The IMAP listener: sockets, TLS, reading whole commands, limits, timeouts.

This is the only IMAP module that does I/O.  For each connection it admits
the client through ``ctx.imap_gate`` (total and per-address limits), greets,
then reads one complete command at a time — a line, and for every literal
the line announces, the continuation ``+`` (unless LITERAL+), the literal's
octets and the next line — and hands the bytes to
:meth:`.session.Session.execute`.

Limits: a line longer than ``mailstore.maxLineLength`` is read to its end
without keeping it and answered ``BAD``; a literal over
``mailstore.maxLiteralBytes`` is refused *before* it is read (before login,
both limits are 4 KB: :data:`~correo_server.guard.PRELOGIN_INPUT_BYTES`,
except for the line of an ``ID`` command, which RFC 2971 lets be 32 KB) — for a
synchronizing literal with ``NO [TOOBIG]`` (the client never sends it); for
a non-synchronizing one (LITERAL+, already on its way) with ``BAD`` and
``BYE``, and the connection is closed, since its octets cannot be told
apart from commands.  A session idle for ``mailstore.imapIdleTimeoutSeconds``
(30 minutes by default; RFC 3501 5.4) is logged out, and one that has not
logged in ``auth.loginTimeoutSeconds`` after connecting (3 minutes, as
Dovecot's login processes) is disconnected whatever it is doing: one
sweeper per listener looks at the sessions, rather than a timer armed and
disarmed around every command read.

After COMPRESS DEFLATE (RFC 4978, :mod:`.commands.compress`) the connection
inflates what it reads — at most ``READ_CHUNK`` octets of output at a time,
so a small compressed input cannot blow up into memory before the line and
literal limits see it — and deflates what it sends, with a sync flush at
each flush so every response reaches the client whole.
"""
from __future__ import annotations

import asyncio
import re
import ssl
import zlib

from ... import logs
from ...config import Listen
from ...guard import InflightBudget
from ..context import MailstoreContext
from . import responses as R
from .commands import Registry, default_registry
from .reader import LineTooLong, literal_at_end, tag_of
from .session import Session
from .states import NotAuthenticated
from .storebackend import StoreBackend

log = logs.get(__name__)

READ_CHUNK = 64 * 1024
# RFC 2971: at most 30 field-value pairs, fields of 30 and values of 1024
# octets; so long an ID line is accepted before login, where other lines
# are capped at 4 KB.
ID_LINE_BYTES = 30 * (30 + 1024 + 6) + 64
_ID_COMMAND = re.compile(rb"[^ \r\n]{1,64} ID[ \r]", re.I)
TLS_HANDSHAKE_TIMEOUT = 30.0


class LiteralTooLarge(Exception):
    def __init__(self, tag: str | None, size: int, nonsync: bool) -> None:
        self.tag, self.size, self.nonsync = tag, size, nonsync


class LiteralsBusy(LiteralTooLarge):
    """The literal fits the limit, but the service holds its budget of
    literals already (:class:`~correo_server.guard.InflightBudget`)."""


class Connection:
    """Buffered reading and writing on one client connection (a :class:`~.session.Channel`)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 max_line: int, max_literal: int, tls: ssl.SSLContext | None, tls_active: bool,
                 write_timeout: float = 1800.0, budget: InflightBudget | None = None) -> None:
        self.reader = reader
        self.budget = budget  # literals held at once over all sessions
        self.reserved = 0  # what this connection's current command took of it
        self.writer = writer
        self.write_timeout = write_timeout
        self.max_line = max_line
        self.id_line = 0  # when larger than max_line: the limit for an ID command's line
        self.max_literal = max_literal
        self._tls = tls
        self.tls_active = tls_active
        peer = writer.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else str(peer or "")
        self._in = bytearray()
        self._out = bytearray()
        self._scan = 0
        self.task: asyncio.Task | None = None  # the task serving this connection
        self.waiting_since: float | None = None  # reading the next command since (loop time)
        self.connected_at = asyncio.get_running_loop().time()
        self.expired: str | None = None  # why the sweeper ended the session (the BYE's text)
        self._inflate: "zlib._Decompress | None" = None  # COMPRESS=DEFLATE (RFC 4978), once started
        self._deflate: "zlib._Compress | None" = None

    @property
    def tls_available(self) -> bool:
        return self._tls is not None

    @property
    def compress_active(self) -> bool:
        return self._deflate is not None

    def start_compress(self) -> None:
        """From now on both directions are raw DEFLATE (RFC 1951) streams.
        Octets the client sent after the COMPRESS command are already
        compressed: they are inflated like the rest."""
        self._inflate = zlib.decompressobj(-15)
        self._deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        early = bytes(self._in)
        self._in.clear()
        self._scan = 0
        if early:
            self._inflated(early)

    def _inflated(self, data: bytes) -> None:
        try:
            self._in += self._inflate.decompress(data, READ_CHUNK)
        except zlib.error as exc:
            raise ConnectionError(f"corrupt compressed input: {exc}") from None

    # -- writing -------------------------------------------------------------
    def write(self, data: bytes) -> None:
        self._out += data

    def pending(self) -> int:
        return len(self._out)

    def _send_buffered(self) -> None:
        """Hand what is buffered to the transport (deflated, after COMPRESS)."""
        data = bytes(self._out)
        self._out.clear()
        if self._deflate is not None:
            data = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        self.writer.write(data)

    async def flush(self) -> None:
        """Send what is buffered; a client that stops reading for as long as
        the autologout timer is disconnected (TimeoutError).  Only a
        transport whose buffer is over its high-water mark is waited for
        (with the timer); otherwise the bytes are on their way already."""
        transport = self.writer.transport
        if self._out:
            if transport.is_closing():
                raise ConnectionError("connection closed")
            self._send_buffered()
        if transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]:
            async with asyncio.timeout(self.write_timeout):
                await self.writer.drain()

    # -- reading ----------------------------------------------------------------
    async def _fill(self) -> None:
        if self._inflate is None:
            data = await self.reader.read(READ_CHUNK)
            if not data:
                raise EOFError
            self._in += data
            return
        before = len(self._in)
        while len(self._in) == before:  # a compressed chunk may inflate to nothing yet
            if self._inflate.eof:
                raise EOFError  # the client ended its compressed stream
            tail = self._inflate.unconsumed_tail
            if tail:
                self._inflated(tail)
                continue
            data = await self.reader.read(READ_CHUNK)
            if not data:
                raise EOFError
            self._inflated(data)

    def _line_limit(self) -> int:
        """The limit for the line being read: :attr:`max_line`, or for an
        ``ID`` command the larger :attr:`id_line` when one is set."""
        if self.id_line > self.max_line and _ID_COMMAND.match(self._in):
            return self.id_line
        return self.max_line

    async def read_line(self) -> bytes:
        """One line with its CRLF.  A line over the limit is consumed to its
        end and :class:`LineTooLong` raised (with its first octets)."""
        while True:
            i = self._in.find(b"\n", self._scan)
            if i >= 0:
                self._scan = 0
                if i + 1 > self._line_limit() + 2:
                    head = bytes(self._in[:256])
                    del self._in[:i + 1]
                    raise LineTooLong(head)
                line = bytes(self._in[:i + 1])
                del self._in[:i + 1]
                return line
            self._scan = len(self._in)
            if len(self._in) > self._line_limit() + 2:
                head = bytes(self._in[:256])
                await self._discard_line()
                raise LineTooLong(head)
            await self._fill()

    async def _discard_line(self) -> None:
        self._in.clear()
        self._scan = 0
        while True:
            await self._fill()
            i = self._in.find(b"\n")
            if i >= 0:
                del self._in[:i + 1]
                return
            self._in.clear()

    async def read_exactly(self, n: int) -> bytes:
        while len(self._in) < n:
            await self._fill()
        data = bytes(self._in[:n])
        del self._in[:n]
        self._scan = 0
        return data

    async def read_command(self, max_literal: int | None = None) -> bytes:
        """A whole command: its lines and literals, as sent.  ``max_literal``
        (default: the connection's) bounds each literal and their total."""
        limit = self.max_literal if max_literal is None else max_literal
        parts: list[bytes] = []
        total = 0
        tag: str | None = None
        while True:
            try:
                line = await self.read_line()
            except LineTooLong as exc:
                if parts:  # a continuation line: answer with the command's tag
                    raise LineTooLong(exc.head, tag) from None
                raise
            if tag is None:
                tag = tag_of(line)
            parts.append(line)
            literal = literal_at_end(line)
            if literal is None:
                return b"".join(parts)
            size, nonsync = literal
            total += size + len(line)  # lines count too: many {0} literals are no way around it
            if size > limit or total > limit + self.max_line:
                raise LiteralTooLarge(tag, size, nonsync)
            if self.budget is not None and size:
                if not self.budget.take(size):
                    raise LiteralsBusy(tag, size, nonsync)
                self.reserved += size
            if not nonsync:
                self.write(R.continuation("OK"))
                await self.flush()
            parts.append(await self.read_exactly(size))

    async def start_tls(self) -> None:
        """STARTTLS: anything the client sent after the command is dropped
        (it was not protected; RFC 3501 6.2.1 / CVE-2011-0411 class)."""
        self._in.clear()
        self._scan = 0
        await self.writer.start_tls(self._tls, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
        self.tls_active = True

    def release_literals(self) -> None:
        """Give back what the last command's literals took of the budget."""
        if self.budget is not None and self.reserved:
            self.budget.give(self.reserved)
        self.reserved = 0

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()


async def _handle(ctx: MailstoreContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  implicit_tls: bool, connections: set, registry: Registry, backend: StoreBackend) -> None:
    ms = ctx.config.mailstore
    conn = Connection(reader, writer, max_line=ms.max_line_length, max_literal=ms.max_literal_bytes,
                      tls=ctx.tls.context if ctx.tls else None, tls_active=implicit_tls,
                      write_timeout=float(ms.imap_idle_timeout_seconds), budget=ctx.imap_literals)
    peer = conn.peer
    gate = ctx.imap_gate
    refused = gate.admit(peer) if gate is not None else None
    if refused:
        try:
            writer.write(R.untagged(f"BYE {refused[0].upper()}{refused[1:]}, try again later."))
            await asyncio.wait_for(writer.drain(), 5)
        except (OSError, asyncio.TimeoutError):
            pass
        conn.close()
        return
    session = Session(ctx, conn, backend=backend, registry=registry)
    conn.task = asyncio.current_task()
    connections.add((conn, session))
    ctx.metrics.inc("mailstore_sessions_total", protocol="imap")
    ctx.metrics.inc("mailstore_sessions_active", protocol="imap")
    loop = asyncio.get_running_loop()
    try:
        conn.write(session.greeting())
        await conn.flush()
        while not session.closed:
            conn.waiting_since = loop.time()  # the sweeper (_sweep_idle) ends a wait too long
            conn.max_line = session.line_limit()  # for the command and what it reads itself (AUTHENTICATE)
            conn.id_line = ID_LINE_BYTES
            try:
                command = await conn.read_command(session.literal_limit())
            except LineTooLong as exc:
                conn.waiting_since = None
                conn.write(R.tagged(exc.tag or "*", "BAD", "Command line too long."))
                await conn.flush()
                continue
            except LiteralTooLarge as exc:
                conn.waiting_since = None
                conn.release_literals()
                if isinstance(exc, LiteralsBusy):
                    ctx.metrics.inc("mailstore_literals_refused_total")
                    log.info("imap_literals_busy", peer=peer, size=exc.size, held=conn.budget.held if conn.budget else 0)
                    text = "The server is busy with other clients' messages; try again later."
                    if exc.nonsync:
                        conn.write(R.tagged(exc.tag or "*", "NO", text, "LIMIT"))
                        session.bye("Cannot read this literal now; cannot continue this connection.")
                        break
                    conn.write(R.tagged(exc.tag or "*", "NO", text, "LIMIT"))
                    await conn.flush()
                    continue
                if exc.nonsync:
                    conn.write(R.tagged(exc.tag or "*", "BAD", "Literal too large.", "TOOBIG"))
                    session.bye("Literal too large; cannot continue this connection.")
                    break
                conn.write(R.tagged(exc.tag or "*", "NO", f"Literal too large (the limit is "
                                                          f"{session.literal_limit()} octets).", "TOOBIG"))
                await conn.flush()
                continue
            conn.waiting_since = None
            try:
                await session.execute(command)
            finally:
                conn.release_literals()
            await conn.flush()
        await conn.flush()
    except (EOFError, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError, TimeoutError):
        pass
    except asyncio.CancelledError:
        if not conn.expired:
            raise
        asyncio.current_task().uncancel()
        session.bye(conn.expired)
        try:
            async with asyncio.timeout(5):
                await conn.flush()
        except (ConnectionError, OSError, TimeoutError):
            pass
    except Exception:
        log.exception("imap_session_crashed", peer=peer)
    finally:
        conn.release_literals()  # a connection lost in the middle of a literal
        session.close()
        connections.discard((conn, session))
        if gate is not None:
            gate.release(peer)
        ctx.metrics.inc("mailstore_sessions_active", -1, protocol="imap")
        conn.close()


async def _sweep_idle(connections: set, timeout: float, login_timeout: float) -> None:
    """Log out sessions that sent no command for ``timeout`` seconds (RFC
    3501 5.4's autologout timer), and disconnect those not logged in
    ``login_timeout`` seconds after connecting, whatever they are doing
    (a client trickling a command or an AUTHENTICATE answer a byte at a
    time is not idle, but holds a connection all the same): one timer for
    the whole listener instead of one armed and disarmed around every
    command read; a session is ended within a tenth of its timeout."""
    loop = asyncio.get_running_loop()
    interval = max(0.05, min(min(timeout, login_timeout) / 10, 30.0))
    while True:
        await asyncio.sleep(interval)
        now = loop.time()
        for conn, session in list(connections):
            if conn.expired or conn.task is None:
                continue
            since = conn.waiting_since
            if isinstance(session.state, NotAuthenticated) and now - conn.connected_at >= login_timeout:
                conn.expired = f"Disconnected: no login within {login_timeout:g} seconds."
            elif since is not None and now - since >= timeout:
                conn.expired = "Disconnected for inactivity."
            else:
                continue
            conn.task.cancel()


def register_metrics(ctx: MailstoreContext) -> None:
    m = ctx.metrics
    m.counter("mailstore_sessions_total", "Client sessions started, by protocol")
    m.gauge("mailstore_sessions_active", "Client sessions open now, by protocol")
    m.counter("mailstore_logins_total", "Logins by protocol and result (ok, failed)")
    m.counter("mailstore_imap_commands_total", "IMAP commands executed, by command")


async def serve_imap(ctx: MailstoreContext, listen: Listen, *, implicit_tls: bool = False,
                     registry: Registry | None = None) -> asyncio.Server:
    """Listen for IMAP (or IMAPS with ``implicit_tls``) on ``listen``.  Closing
    the returned server also says BYE to the sessions still open.
    ``registry``: the commands and extensions (default: every module of
    :mod:`.commands`)."""
    if implicit_tls and ctx.tls is None:
        raise ValueError("implicit TLS needs a TLS key pair in the configuration")
    register_metrics(ctx)
    registry = registry if registry is not None else default_registry()
    backend = StoreBackend(ctx)
    connections: set = set()
    sweeper = asyncio.ensure_future(_sweep_idle(connections, float(ctx.config.mailstore.imap_idle_timeout_seconds),
                                                float(ctx.config.auth.login_timeout_seconds)))
    server = await asyncio.start_server(
        lambda r, w: _handle(ctx, r, w, implicit_tls, connections, registry, backend),
        listen.host, listen.port,
        ssl=ctx.tls.context if implicit_tls else None,
        ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if implicit_tls else None,
        reuse_address=True,
    )
    addr = server.sockets[0].getsockname() if server.sockets else None
    log.info("imap_listening", address=str(addr), implicit_tls=implicit_tls)
    return _Server(server, connections, sweeper)  # type: ignore[return-value]


class _Server:
    """The listening server, whose ``close`` also says BYE to the sessions
    still open (a wrapper: uvloop's servers take no attributes of ours)."""

    def __init__(self, server: asyncio.AbstractServer, connections: set, sweeper: asyncio.Future) -> None:
        self._server = server
        self.correo_connections = connections
        self._sweeper = sweeper

    def close(self) -> None:
        self._server.close()
        self._sweeper.cancel()
        for conn, _session in list(self.correo_connections):
            try:
                conn.write(R.untagged("BYE Server shutting down."))
                conn._send_buffered()
            except (OSError, RuntimeError):
                pass
            conn.close()

    def __getattr__(self, name: str):
        return getattr(self._server, name)


async def shutdown(server: asyncio.Server, timeout: float = 10.0) -> None:
    """Stop listening, say BYE to every open session, and wait (up to
    ``timeout``) until they have ended; what the service calls on stop."""
    server.close()
    connections = getattr(server, "correo_connections", set())
    deadline = asyncio.get_running_loop().time() + timeout
    while connections and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    await server.wait_closed()
