"""The POP3 listener: sockets, lines, TLS and timeouts around a :class:`~.states.Pop3Session`.

One asyncio task per connection reads a line, parses it (:mod:`.commands`),
lets the session's state decide (:mod:`.states`), and writes the reply
(dot-stuffed by :mod:`.multiline`).  :class:`StoreBackend` is what the states
ask of the outside world, implemented over the mailstore's
:class:`~correo_server.mailstore.context.MailstoreContext`: logins through
:func:`correo_server.login.check_login`, the maildrop through the store.

Limits: lines longer than ``mailstore.maxLineLength``, and never more than
4 KB (:data:`~correo_server.guard.PRELOGIN_INPUT_BYTES`: POP3 needs no
longer line, before login or after; RFC 2449 caps commands at 255 octets),
are read to their end, dropped and answered ``-ERR``; connections are counted by ``ctx.pop3_gate``
(total and per client address); a session idle for
``mailstore.pop3IdleTimeoutSeconds`` (RFC 1939 asks for at least 10 minutes)
is closed without entering the UPDATE state, and one that has not logged in
``auth.loginTimeoutSeconds`` after connecting (3 minutes, as Dovecot's login
processes) is disconnected.
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
from . import commands
from .backend import StoreBackend, register_metrics
from .multiline import DotStuffer, stuff
from .states import IMPLEMENTATION, Pop3Session, Reply, Then

log = logs.get(__name__)

CHUNK = 64 * 1024
TLS_HANDSHAKE_TIMEOUT = 30.0
_session_ids = itertools.count(1)
# The open connections of each listener, so that shutdown can end them
# (asyncio.Server.close() in Python 3.11 only stops accepting).
_connections: "weakref.WeakKeyDictionary[asyncio.Server, set[Pop3Connection]]" = weakref.WeakKeyDictionary()


def line_limit(ctx: MailstoreContext) -> int:
    """The longest line a POP3 client may send (its read buffer's size too)."""
    return min(ctx.config.mailstore.max_line_length, PRELOGIN_INPUT_BYTES)


class Pop3Connection:
    def __init__(self, ctx: MailstoreContext, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, peer: str) -> None:
        self.ctx = ctx
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.sid = next(_session_ids)
        self.log = log.bind(session=self.sid, peer=peer)
        self.backend = StoreBackend(ctx, peer, tls_active=self.tls_active, log=self.log)
        self.session = Pop3Session(self.backend)
        self.max_line = line_limit(ctx)
        self.idle = float(ctx.config.mailstore.pop3_idle_timeout_seconds)
        self.login_deadline = asyncio.get_running_loop().time() + ctx.config.auth.login_timeout_seconds
        self.task: asyncio.Task | None = None

    def tls_active(self) -> bool:
        return self.writer.get_extra_info("ssl_object") is not None

    # -- reading -------------------------------------------------------------------
    async def read_line(self) -> bytes | None:
        """One line, CRLF included; None at end of stream (linereader)."""
        return await read_line(self.reader, self.max_line)

    # -- writing -------------------------------------------------------------------
    async def send(self, reply: Reply) -> None:
        self.writer.write(reply.status_line())
        if reply.lines is not None:
            text = "".join(f"{line}\r\n" for line in reply.lines).encode("utf-8")
            self.writer.write(stuff(text))
        elif reply.body is not None:
            stuffer = DotStuffer()
            body = reply.body
            for start in range(0, len(body), CHUNK):
                self.writer.write(stuffer.feed(body[start:start + CHUNK]))
                await self.writer.drain()
            self.writer.write(stuffer.finish())
        await self.writer.drain()

    async def send_text(self, text: str) -> None:
        self.writer.write(text.encode("utf-8") + b"\r\n")
        await self.writer.drain()

    # -- the loop ------------------------------------------------------------------
    async def run(self) -> None:
        await self.send_text(f"+OK {IMPLEMENTATION} POP3 server ready.")
        loop = asyncio.get_running_loop()
        while True:
            logging_in = self.session.mailbox is None
            try:
                async with asyncio.timeout_at(min(loop.time() + self.idle, self.login_deadline) if logging_in
                                              else loop.time() + self.idle):
                    line = await self.read_line()
            except TimeoutError:
                # RFC 1939 section 3: autologout, without entering the UPDATE state.
                if logging_in and loop.time() >= self.login_deadline:
                    self.log.info("pop3_login_timeout")
                    await self.send_text(f"-ERR Disconnected: no login within "
                                         f"{self.ctx.config.auth.login_timeout_seconds} seconds.")
                    return
                self.log.info("pop3_idle_timeout")
                await self.send_text("-ERR Disconnected for inactivity.")
                return
            except LineTooLong:
                if self.session.sasl_pending:
                    self.session.sasl_pending = False
                    reply = Reply(False, "[AUTH] SASL response too long.")
                else:
                    reply = self.session.bad(f"Line too long (limit {self.max_line} octets).")
            else:
                if line is None:
                    return
                reply = await self.answer(line)
            try:
                # a client that stops reading is as idle as one that stops writing
                async with asyncio.timeout(self.idle):
                    if reply.then is Then.SASL:
                        await self.send_text("+ ")
                        continue
                    await self.send(reply)
            except TimeoutError:
                self.log.info("pop3_write_timeout")
                self.writer.transport.abort()
                return
            if reply.then is Then.CLOSE:
                return
            if reply.then is Then.STARTTLS and not await self.start_tls():
                return

    async def answer(self, line: bytes) -> Reply:
        if self.session.sasl_pending:
            return await self.session.sasl_line(line.decode("utf-8", "replace").rstrip("\r\n"))
        try:
            parsed: commands.Command | commands.CommandError = commands.parse(line)
        except commands.CommandError as exc:
            parsed = exc
        return await self.session.line(parsed)

    async def start_tls(self) -> bool:
        # Anything the client pipelined after STLS arrived in plaintext and
        # must not be taken as if it came over TLS (RFC 2595 section 4,
        # the STARTTLS command-injection attack): drop it.
        buffered = getattr(self.reader, "_buffer", None)
        if buffered:
            buffered.clear()
        assert self.ctx.tls is not None
        try:
            await self.writer.start_tls(self.ctx.tls.context, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
        except (ssl.SSLError, ConnectionError, OSError, TimeoutError) as exc:
            self.log.info("pop3_tls_failed", error=str(exc))
            return False
        self.session = Pop3Session(self.backend)  # RFC 2595: forget everything said before
        return True


async def _handle(ctx: MailstoreContext, live: set, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter) -> None:
    peername = writer.get_extra_info("peername")
    peer = peername[0] if isinstance(peername, tuple) else str(peername or "")
    gate = ctx.pop3_gate
    refusal = gate.admit(peer) if gate is not None else None
    if refusal:
        try:
            writer.write(f"-ERR [SYS/TEMP] {refusal.capitalize()}, try again later.\r\n".encode())
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()
        return
    ctx.metrics.inc("mailstore_sessions_total", protocol="pop3")
    ctx.metrics.inc("mailstore_sessions_active", protocol="pop3")
    conn = Pop3Connection(ctx, reader, writer, peer)
    conn.task = asyncio.current_task()
    conn.log.info("pop3_session_start", tls=conn.tls_active())
    live.add(conn)
    try:
        await conn.run()
    except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
        pass
    except Exception:
        conn.log.exception("pop3_session_failed")
    finally:
        live.discard(conn)
        conn.backend.end_session()
        ctx.metrics.inc("mailstore_sessions_active", -1, protocol="pop3")
        if gate is not None:
            gate.release(peer)
        try:
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), 5)
        except (ConnectionError, ssl.SSLError, TimeoutError, OSError):
            pass
        conn.log.info("pop3_session_end")


async def serve_pop3(ctx: MailstoreContext, listen: Listen, *, implicit_tls: bool = False) -> asyncio.Server:
    """Start a POP3 listener (``implicit_tls``: POP3S, TLS from the first byte)."""
    if implicit_tls and ctx.tls is None:
        raise ValueError("POP3S needs a TLS certificate (tls: in correo.yaml)")
    register_metrics(ctx.metrics)
    live: set[Pop3Connection] = set()
    server = await asyncio.start_server(
        functools.partial(_handle, ctx, live), listen.host, listen.port,
        ssl=ctx.tls.context if implicit_tls else None,
        ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if implicit_tls else None,
        limit=line_limit(ctx) + 2,
        reuse_address=True,
    )
    _connections[server] = live
    return server


async def shutdown(server: asyncio.Server) -> None:
    """Stop accepting and end every session of this listener.  Sessions are
    told ``-ERR [SYS/TEMP]`` and closed without the UPDATE state, so messages
    marked deleted stay (RFC 1939: only QUIT removes them)."""
    server.close()
    conns = list(_connections.get(server, ()))
    for conn in conns:
        try:
            conn.writer.write(b"-ERR [SYS/TEMP] Server is shutting down, try again later.\r\n")
        except (ConnectionError, RuntimeError):
            pass
        conn.writer.close()
    tasks = [c.task for c in conns if c.task is not None and not c.task.done()]
    if tasks:  # let each session release its maildrop lock and log its end
        _, pending = await asyncio.wait(tasks, timeout=5)
        for task in pending:
            task.cancel()
    await server.wait_closed()
