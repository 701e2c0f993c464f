"""One SMTP client connection, as I/O: command lines in, replies out.

The relay's protocol (:mod:`.smtp`) says what each command means; this
class only moves octets, as one :class:`asyncio.Protocol` per connection
(issue 12: aiosmtpd's stream reader, its task per connection, its timer
reset per command and its per-connection method tables cost the relay a
fifth of its CPU per message; the internal LMTP hops had already left it
for :mod:`correo_server.wire.server`).  What it does:

* **framing**: a command line ends at LF; a line longer than the limit the
  subclass gives for its verb (:meth:`LineConnection.line_limit`) is
  answered ``500 5.5.2`` once, after its end has come, and the session goes
  on.  Nothing of an over-long line is kept;
* **one command at a time**: :meth:`LineConnection.command` answers at once
  (most commands: they only consult memory), or returns an awaitable (SPF at
  ``MAIL``, the DNSBL verdict at ``RCPT``, a login check, the message, the
  TLS handshake), which runs as a task while further input waits in the
  buffer (reading pauses past :data:`HOLD_LIMIT`);
* **pipelining** (RFC 2920) as it comes: the replies to every command
  answered in one pass over the input go out in one write;
* the **message** after ``354``: every octet goes to the
  :class:`DataSink` first, in the pieces it arrives in, up to the end marker
  (``<CRLF>.<CRLF>``, nothing else); what follows it is commands again;
* **answers that are not commands** (an AUTH exchange):
  :meth:`LineConnection.read_line` hands the next line to the waiting
  command instead of the command table;
* **backpressure**: a client that does not read its replies stops being
  read (``pause_writing``) until it does;
* **STARTTLS** (:meth:`LineConnection.upgrade`): what was pipelined behind
  the command is discarded, never read inside the TLS session (RFC 3207
  section 4, CVE-2011-0411);
* **end of input**: commands already received are still answered; a client
  that closes its side in the middle of a message ends the transfer at once.
"""
from __future__ import annotations

import asyncio
import ssl
from typing import Awaitable

from .. import logs
from ..wire.data import END
from .data import MessageReader

log = logs.get(__name__)

HOLD_LIMIT = 1024 * 1024  # octets of input held while a command waits, before reading pauses


class LineTooLong(Exception):
    """An answer line longer than allowed (:meth:`LineConnection.read_line`)."""


class DataSink:
    """The message after ``354``, as it arrives: passed to a
    :class:`~.data.MessageReader` up to the end marker (held back: the
    octets that could be the start of one), then done."""

    def __init__(self, reader: MessageReader, done: asyncio.Future) -> None:
        self.reader = reader
        self.done = done
        self.pending = b"\r\n"  # not passed on yet; the first two are a virtual line end
        self.virtual = 2

    def feed(self, data: bytes) -> bytes | None:
        """Take what arrived; returns what follows the end marker once it
        has come (None before)."""
        buf = self.pending + data
        i = buf.find(END)
        if i >= 0:
            body, rest, self.pending = buf[:i + 2], buf[i + 5:], b""
        else:
            k = 4
            while k and not buf.endswith(END[:k]):
                k -= 1
            body, rest, self.pending = buf[:len(buf) - k], None, buf[len(buf) - k:]
        if self.virtual:
            cut = min(self.virtual, len(body))
            body, self.virtual = body[cut:], self.virtual - cut
        if body:
            self.reader.feed_bytes(body)
        if rest is not None:
            self.reader.finish()
            if not self.done.done():
                self.done.set_result(True)
        return rest


class LineConnection(asyncio.Protocol):
    """The I/O of one connection (see the module docstring).  Subclasses
    implement :meth:`command`, :meth:`line_limit`, :meth:`too_long` and
    :meth:`failed`, and call :meth:`reply` to answer."""

    max_line = 4096  # the longest line any verb may have (octets, without CRLF); set per connection

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.BaseTransport | None = None
        self._buf = bytearray()
        self._out: list[bytes] = []
        self._batch = False  # inside a pass over the input: replies wait for one write
        self._task: asyncio.Task | None = None  # the command that is waiting
        self._sink: DataSink | None = None
        self._line_waiter: asyncio.Future | None = None
        self._waiter_limit = 0
        self._skipping = False  # inside an over-long line
        self._read_paused = False
        self._write_paused = False
        self._eof = False
        self._closing = False

    # -- what subclasses implement ---------------------------------------------
    def command(self, line: bytes) -> Awaitable[None] | None:
        """Answer one command line (CRLF stripped); an awaitable if it must wait."""
        raise NotImplementedError

    def line_limit(self, line: bytes) -> int:
        """The longest this command line may be (octets, without CRLF)."""
        return self.max_line

    def too_long(self) -> None:
        """Answer a command line over its limit."""
        raise NotImplementedError

    def failed(self, error: BaseException) -> None:
        """A waiting command raised: answer for it (the session goes on)."""
        raise NotImplementedError

    # -- replies ------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        """Queue reply octets; written at the end of the pass over the input,
        or now when no pass is running (a waiting command's reply)."""
        self._out.append(data)
        if not self._batch:
            self._flush()

    def _flush(self) -> None:
        out = self._out
        transport = self.transport
        if out:
            if transport is not None and not transport.is_closing():
                transport.write(out[0] if len(out) == 1 else b"".join(out))  # type: ignore[attr-defined]
            out.clear()
        if (self._closing or self._eof) and transport is not None and self._task is None:
            transport.close()

    def close_after_reply(self) -> None:
        """Close once the replies so far are written (QUIT, limits)."""
        self._closing = True
        if not self._batch:
            self._flush()

    # -- asyncio callbacks ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self.transport = None
        if self._sink is not None and not self._sink.done.done():
            self._sink.done.set_result(False)
        waiter, self._line_waiter = self._line_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._task is None or self._line_waiter is not None:
            self._resume_reading()
            self._process()

    def _pause_reading(self) -> None:
        if not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()  # type: ignore[attr-defined]

    def _resume_reading(self) -> None:
        if self._read_paused and self.transport is not None and not self._write_paused:
            self._read_paused = False
            self.transport.resume_reading()  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        sink = self._sink
        if sink is not None:
            rest = sink.feed(data)
            if rest is None:
                return
            self._sink = None
            if not rest:
                return
            data = rest
        self._buf += data
        if self._task is None or self._line_waiter is not None:
            self._process()
        elif len(self._buf) > HOLD_LIMIT:
            self._pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        if self._sink is not None:
            return False  # mid-message: the transfer is over (the waiting command sees the sink end)
        if self._task is None:
            self._process()
        if self._task is None:
            return False  # answered what came; asyncio closes the transport
        # A command is waiting: its reply (and those to the commands after it) still go out.
        return not isinstance(self.transport, asyncio.Transport) or \
            self.transport.get_extra_info("ssl_object") is None

    # -- input --------------------------------------------------------------------
    def _process(self) -> None:
        buf = self._buf
        pos = 0
        self._batch = True
        try:
            while not self._closing and not self._write_paused:
                if self._task is not None and self._line_waiter is None:
                    break
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    if len(buf) - pos > self.max_line + 2:
                        self._skipping = True  # answered when the line ends; nothing of it is kept
                        pos = len(buf)
                    break
                end = nl - 1 if nl > pos and buf[nl - 1] == 13 else nl
                line = bytes(buf[pos:end])
                pos = nl + 1
                waiter = self._line_waiter
                if waiter is not None:
                    self._line_waiter = None
                    too_long = self._skipping or len(line) > self._waiter_limit
                    self._skipping = False
                    if not waiter.done():
                        if too_long:
                            waiter.set_exception(LineTooLong())
                        else:
                            waiter.set_result(line)
                    continue
                if self._skipping or len(line) > self.line_limit(line):
                    self._skipping = False
                    self.too_long()
                    continue
                try:
                    pending = self.command(line)
                except Exception as exc:  # a bug answers 451 for its command; the session goes on
                    self.failed(exc)
                    continue
                if pending is not None:
                    del buf[:pos]  # what the command may read next (the message) starts here
                    pos = 0
                    self._start(pending)
        finally:
            if pos:
                del buf[:pos]
            self._batch = False
            self._flush()
        if self._task is not None and len(buf) > HOLD_LIMIT:
            self._pause_reading()

    def _start(self, pending: Awaitable[None]) -> None:
        task = self._task = asyncio.ensure_future(pending)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        if task is not self._task:
            return
        self._task = None
        if not task.cancelled():
            error = task.exception()
            if error is not None and self.transport is not None:
                self.failed(error)
        if self.transport is None:
            return
        self._resume_reading()
        if self._buf:
            self._process()
        else:
            self._flush()

    # -- for waiting commands ---------------------------------------------------------
    async def read_line(self, limit: int) -> bytes | None:
        """The next line from the client (CRLF stripped), not as a command: an
        answer inside an exchange.  None if the connection went away;
        :class:`LineTooLong` for a line longer than ``limit`` (dropped)."""
        if self.transport is None:
            return None
        waiter = self.loop.create_future()
        self._line_waiter, self._waiter_limit = waiter, limit
        self._flush()  # the challenge goes out before the answer is awaited
        if self._buf:
            self.loop.call_soon(self._process)
        self._resume_reading()
        return await waiter

    def start_message(self, sink: DataSink) -> None:
        """From now on the input is the message, up to its end marker."""
        self._sink = sink
        if self._buf:  # sent right behind DATA
            data = bytes(self._buf)
            self._buf.clear()
            rest = sink.feed(data)
            if rest is not None:
                self._sink = None
                self._buf += rest
        self._resume_reading()

    async def upgrade(self, context: ssl.SSLContext, timeout: float) -> bool:
        """Switch to TLS (after the ``220``).  What the client pipelined
        behind STARTTLS is discarded.  False if the handshake failed (the
        connection is then closed)."""
        self._flush()
        self._buf.clear()
        transport = self.transport
        if transport is None:
            return False
        try:
            new = await self.loop.start_tls(transport, self, context, server_side=True,  # type: ignore[arg-type]
                                            ssl_handshake_timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - a failed handshake is the client's event; never plaintext after it
            log.info("tls_handshake_failed", error=str(exc)[:200] or type(exc).__name__)
            if self.transport is not None:
                self.transport.close()
            return False
        if new is None or self.transport is None:
            return False
        self.transport = new  # what arrived since came through TLS: kept
        return True
