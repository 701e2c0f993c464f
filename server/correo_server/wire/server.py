"""A lean LMTP server (RFC 2033) for correo's two internal hops.

The queue listens here for the relay (:mod:`correo_server.queue.lmtp_in`),
the mailstore for the queue (:mod:`correo_server.mailstore.lmtp`).  Their
clients are correo's own (:mod:`.client`), on long-lived pooled
connections, so this server is built for many messages per connection
rather than for the open internet (that is the relay's own server,
:mod:`correo_server.relay.connection`, which streams a message into a
sink that spools to disk instead of cutting it out of its buffer):

* one :class:`asyncio.Protocol` per connection and nothing else: no stream
  reader, no task per connection, no method tables built per connection
  (the commands are looked up in one class-level table);
* pipelining (RFC 2920) as it comes: every complete command in the input
  is answered in order and the answers go out in one write; the DATA
  section is cut from the same buffer at its ``<CRLF>.<CRLF>`` (nothing
  else ends it) and unstuffed in one pass (:mod:`.data`);
* ``MAIL FROM:<...> XATOMIC`` (offered in the LHLO reply): when any
  recipient of the transaction was refused, the message is refused for
  the others too (``554 5.5.0`` after DATA or BDAT LAST): a client that
  sends the message before it knows the recipients' fate (BDAT in one
  write) keeps all-or-nothing delivery;
* CHUNKING (RFC 3030): ``BDAT <size> [LAST]`` takes exactly ``size``
  octets as they are (no transparency dots, no end marker), so a client
  can send MAIL, RCPT, ``BDAT ... LAST`` and the message in one write and
  read every reply at once: one round trip per message instead of two
  (the queue's client does, to the mailstore).  After ``BDAT ... LAST``
  come the per-recipient replies, as after DATA;
* a :class:`Handler` decides: ``mail`` and ``rcpt`` synchronously (they
  only consult memory), ``data`` asynchronously, returning one reply per
  accepted recipient (RFC 2033 section 4.2).  Commands that arrive while a
  message is being stored wait in the buffer.

What the handler refuses is its business; the protocol's own rules (LHLO
first, MAIL before RCPT, syntax via :mod:`.paths`, SIZE, the size limit,
at most ``max_recipients``, an idle timeout) are enforced here, with
enhanced status codes on every reply.  ``XFORWARD IDENT=`` (Postfix's
extension) tells the server the client's id for the next message, for its
log line (:attr:`Transaction.ident`).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

from .. import logs
from .data import find_end, longest_line, unstuff
from .paths import PathError, parse_params, path_text, split_keyword
from .replies import Reply

log = logs.get(__name__)

MAX_COMMAND = 2048  # octets of a command line, CRLF included
ATOMIC = "XATOMIC"  # LHLO keyword and MAIL parameter: a refused recipient means nothing is kept
BOGUS_LIMIT = 5  # unrecognised commands before the connection is closed
PAUSE_BYTES = 1024 * 1024  # input held while a message is stored, before reading pauses


@dataclass(slots=True)
class Transaction:
    """One mail transaction: what MAIL and RCPT said, and what the handler
    noted for each accepted recipient (``notes``, the handler's own)."""

    sender: str
    params: dict[str, str | None]
    peer: str
    ident: str = ""  # the client's id for this message (XFORWARD IDENT)
    rcpts: list[str] = field(default_factory=list)
    notes: list[Any] = field(default_factory=list)
    refused: int = 0  # RCPT commands refused

    @property
    def atomic(self) -> bool:
        """``MAIL FROM:<...> XATOMIC``: all the recipients, or nothing is kept."""
        return ATOMIC in self.params

    @property
    def smtputf8(self) -> bool:
        return "SMTPUTF8" in self.params

    @property
    def body(self) -> str:
        return (self.params.get("BODY") or "7BIT").upper()


class Handler(Protocol):
    def mail(self, txn: Transaction) -> Reply | None:
        """``MAIL FROM`` (syntax and SIZE already checked): a refusal, or
        None to accept."""

    def rcpt(self, txn: Transaction, address: str, params: dict[str, str | None]) -> Reply | None:
        """``RCPT TO``: a refusal, or None to accept (the server then adds
        ``address`` to ``txn.rcpts``; the handler may append to ``txn.notes``)."""

    def data(self, txn: Transaction, content: bytes) -> Awaitable[list[Reply]]:
        """The message (unstuffed): one reply per accepted recipient, in order."""


_OK = b"250 2.0.0 Ok\r\n"


def _reply(code: int, status: str, text: str) -> bytes:
    return f"{code} {status} {text}\r\n".encode()


class Listener:
    """What every connection of one listening socket shares."""

    def __init__(self, handler: Handler, *, hostname: str, max_bytes: int, max_line: int | None = None,
                 max_recipients: int = 1000, timeout: float = 300.0, ident: str = "correo LMTP",
                 extensions: tuple[str, ...] = (), on_connection: Callable[[], None] | None = None) -> None:
        self.handler = handler
        self.on_connection = on_connection  # called for each new connection (a metric)
        self.hostname = hostname
        self.max_bytes = max_bytes
        self.max_line = max_line  # octets of a line as sent (stuffed), CRLF included; None: any
        self.max_recipients = max_recipients
        self.timeout = timeout
        self.greeting = f"220 {hostname} {ident} ready\r\n".encode()
        lines = [hostname, "PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME", "SMTPUTF8", f"SIZE {max_bytes}",
                 "CHUNKING", ATOMIC, "XFORWARD IDENT", *extensions]
        self.lhlo = "".join(f"250{'-' if i < len(lines) - 1 else ' '}{line}\r\n"
                            for i, line in enumerate(lines)).encode()
        self.too_big = _reply(552, "5.3.4", f"Message size exceeds fixed maximum message size ({max_bytes} octets)")
        self.connections: set[LMTPConnection] = set()
        self.in_flight = 0  # messages being stored now
        self.idle = asyncio.Event()
        self.idle.set()
        self.server: asyncio.AbstractServer | None = None

    def __call__(self) -> "LMTPConnection":
        if self.on_connection is not None:
            self.on_connection()
        return LMTPConnection(self)

    async def start(self, host: str, port: int) -> asyncio.AbstractServer:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self, host, port, reuse_address=True)
        return self.server

    async def close(self, grace: float = 30.0) -> None:
        """Stop accepting, let messages being stored finish (their replies
        go out), then close every connection.  A transaction cut off before
        its reply was sent is not acknowledged: its client tries again."""
        if self.server is not None:
            self.server.close()
        if not self.idle.is_set():
            try:
                await asyncio.wait_for(self.idle.wait(), grace)
            except TimeoutError:
                log.warning("lmtp_shutdown_with_deliveries_in_flight", count=self.in_flight)
            await asyncio.sleep(0)  # let the replies be written
        for conn in list(self.connections):
            conn.close()
        if self.server is not None:
            await self.server.wait_closed()


class LMTPConnection(asyncio.Protocol):
    """One client connection (see the module docstring)."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.buf = bytearray()
        self.out: list[bytes] = []
        self.greeted = False
        self.txn: Transaction | None = None
        self.ident = ""  # from XFORWARD, for the next transaction
        self.in_data = False
        self.chunk_left = 0  # octets of a BDAT chunk still to take from the input
        self.chunk_last = False  # the chunk being taken is the last (BDAT ... LAST)
        self.chunk_refusal: bytes | None = None  # what the chunk being taken gets instead of being kept
        self.chunks: list[bytes] | None = None  # the message so far, in a BDAT transaction
        self.chunked = 0  # octets taken by BDAT in this transaction
        self.scanned = 0  # octets of the DATA section known to hold no end marker
        self.dropped = False  # the DATA section went over the size limit
        self.busy = False  # a message is being stored (after BDAT LAST: the replies before it wait for its own)
        self.paused = False
        self.bogus = 0
        self.skipping = False  # inside an over-long command line
        self.closing = False
        self.active = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- asyncio callbacks --------------------------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer or "")
        self.listener.connections.add(self)
        loop = self.loop = asyncio.get_running_loop()
        self.active = loop.time()
        self.timer = loop.call_at(self.active + self.listener.timeout, self._idle_check)
        transport.write(self.listener.greeting)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.listener.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self.active = self.loop.time()  # type: ignore[union-attr]
        if self.busy:
            if len(self.buf) > PAUSE_BYTES and not self.paused and self.transport is not None:
                self.paused = True
                self.transport.pause_reading()
            return
        self._process()

    def eof_received(self) -> bool:
        return False

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    # -- the idle timer: one per connection, moved only when it fires ---------
    def _idle_check(self) -> None:
        self.timer = None
        if self.closing or self.transport is None:
            return
        loop = self.loop
        assert loop is not None
        now = loop.time()
        deadline = self.active + self.listener.timeout
        if self.busy or deadline > now + 0.001:
            self.timer = loop.call_at(max(deadline, now + 1.0), self._idle_check)
            return
        self.transport.write(f"421 4.4.2 {self.listener.hostname} Error: timeout exceeded\r\n".encode())
        self.close()

    # -- input ----------------------------------------------------------------
    def _process(self) -> None:
        buf = self.buf
        pos = 0
        while not self.busy and not self.closing:
            if self.chunk_left:
                take = min(len(buf) - pos, self.chunk_left)
                if not take:
                    break
                if self.chunk_refusal is None and self.chunks is not None:
                    if self.chunked + take <= self.listener.max_bytes:
                        self.chunks.append(bytes(buf[pos:pos + take]))
                    else:
                        self.dropped = True
                    self.chunked += take
                pos += take
                self.chunk_left -= take
                if not self.chunk_left:
                    self._chunk_done()
                continue
            if self.in_data:
                end = find_end(buf, pos, self.scanned)
                if end < 0:
                    held = len(buf) - pos
                    if held > self.listener.max_bytes + 2:
                        # Over the limit: keep only what could be the start of the end marker.
                        self.dropped = True
                        del buf[pos:len(buf) - 4]
                        held = 4
                    self.scanned = held
                    break
                with memoryview(buf) as view:
                    body = bytes(view[pos:pos + end])
                pos += end + 3
                self.in_data = False
                self.scanned = 0
                self._end_of_data(body)
                continue
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if len(buf) - pos > MAX_COMMAND:
                    if not self.skipping:
                        self.out.append(_reply(500, "5.5.2", "Command line too long"))
                    self.skipping = True  # the rest of this line is dropped as it comes
                    pos = len(buf)
                break
            line = bytes(buf[pos:nl + 1])
            pos = nl + 1
            if self.skipping or len(line) > MAX_COMMAND:
                if not self.skipping:
                    self.out.append(_reply(500, "5.5.2", "Command line too long"))
                self.skipping = False
                continue
            self._command(line)
        if pos:
            del buf[:pos]
        self._flush()

    def _flush(self) -> None:
        if self.out and self.transport is not None and not (self.busy and self.chunk_last):
            out = self.out
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
        if self.closing and self.transport is not None and not self.busy:
            self.transport.close()

    # -- commands ---------------------------------------------------------------
    def _command(self, raw: bytes) -> None:
        line = raw.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
        verb, _, arg = line.partition(" ")
        method = _COMMANDS.get(verb.upper())
        if method is None:
            if not line:
                self.out.append(_reply(500, "5.5.2", "Error: bad syntax"))
                return
            self.bogus += 1
            if self.bogus >= BOGUS_LIMIT:
                self.out.append(_reply(502, "5.5.1", "Too many unrecognized commands, goodbye."))
                self.closing = True
                return
            self.out.append(_reply(500, "5.5.2", f"Error: command {verb[:20].upper()!r} not recognized"
                                   if verb.isprintable() else "Error: command not recognized"))
            return
        method(self, arg.strip(" "))

    def _lhlo(self, arg: str) -> None:
        if not arg:
            self.out.append(_reply(501, "5.5.4", "Syntax: LHLO hostname"))
            return
        self.greeted = True
        self.txn = None
        self.chunks = None
        self.out.append(self.listener.lhlo)

    def _helo(self, arg: str) -> None:
        self.out.append(_reply(500, "5.5.1", "This is LMTP: say LHLO (RFC 2033)"))

    def _xforward(self, arg: str) -> None:
        if self.txn is not None:
            self.out.append(_reply(503, "5.5.1", "Error: XFORWARD inside a mail transaction"))
            return
        for item in arg.split():
            name, eq, value = item.partition("=")
            if not eq:
                self.out.append(_reply(501, "5.5.4", "Syntax: XFORWARD attribute=value..."))
                return
            if name.upper() == "IDENT":
                self.ident = _xtext_decode(value)[:64]
        self.out.append(_OK)

    def _mail(self, arg: str) -> None:
        if not self.greeted:
            self.out.append(_reply(503, "5.5.1", "Error: send LHLO first"))
            return
        if self.txn is not None:
            self.out.append(_reply(503, "5.5.1", "Error: nested MAIL command"))
            return
        rest = split_keyword(arg, "FROM:")
        if rest is None:
            self.out.append(_reply(501, "5.5.4", "Syntax: MAIL FROM:<address>"))
            return
        try:
            sender, param_text = path_text(rest, allow_null=True)
            params = parse_params(param_text) if param_text else {}
        except PathError as exc:
            self.out.append(exc.reply.wire())
            return
        size = params.get("SIZE")
        if size is not None and (not size.isdigit() or len(size) > 20):
            self.out.append(_reply(501, "5.5.4", "SIZE needs a number"))
            return
        if size is not None and int(size) > self.listener.max_bytes:
            self.out.append(self.listener.too_big)
            return
        txn = Transaction(sender, params, self.peer, self.ident)
        self.ident = ""
        refusal = self.listener.handler.mail(txn)
        if refusal is not None:
            self.out.append(refusal.wire())
            return
        self.txn = txn
        self.out.append(b"250 2.1.0 Ok\r\n")

    def _rcpt(self, arg: str) -> None:
        txn = self.txn
        if txn is None:
            self.out.append(_reply(503, "5.5.1", "Error: need MAIL command"))
            return
        refusal = self._recipient(txn, arg)
        if refusal is not None:
            txn.refused += 1
            self.out.append(refusal)
            return
        self.out.append(b"250 2.1.5 Ok\r\n")

    def _recipient(self, txn: Transaction, arg: str) -> bytes | None:
        """RCPT: None when the recipient is added, else the refusal."""
        rest = split_keyword(arg, "TO:")
        if rest is None:
            return _reply(501, "5.5.4", "Syntax: RCPT TO:<address>")
        try:
            address, param_text = path_text(rest, allow_null=False)
            params = parse_params(param_text) if param_text else {}
        except PathError as exc:
            return exc.reply.wire()
        if len(txn.rcpts) >= self.listener.max_recipients:
            return _reply(452, "4.5.3", "Too many recipients")
        refusal = self.listener.handler.rcpt(txn, address, params)
        if refusal is not None:
            return refusal.wire()
        txn.rcpts.append(address)
        return None

    def _data(self, arg: str) -> None:
        txn = self.txn
        if txn is None:
            self.out.append(_reply(503, "5.5.1", "Error: need MAIL command"))
            return
        if not txn.rcpts:
            self.out.append(_reply(503, "5.5.1", "Error: need RCPT command"))
            return
        if arg:
            self.out.append(_reply(501, "5.5.4", "Syntax: DATA"))
            return
        if self.chunks is not None:
            self.out.append(_reply(503, "5.5.1", "Error: DATA after BDAT in one transaction"))
            return
        self.in_data = True
        self.dropped = False
        self.scanned = 0
        self.out.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")

    def _bdat(self, arg: str) -> None:
        size, _, last = arg.partition(" ")
        last = last.strip(" ")
        if not size.isdigit() or len(size) > 20 or last.upper() not in ("", "LAST"):
            # How many octets follow is unknown: the input cannot be followed any further.
            self.out.append(_reply(501, "5.5.4", "Syntax: BDAT size [LAST]; closing the connection"))
            self.closing = True
            return
        txn = self.txn
        self.chunk_left = int(size)
        self.chunk_last = bool(last)
        self.chunk_refusal = None
        if txn is None:
            self.chunk_refusal = _reply(503, "5.5.1", "Error: need MAIL command")
        elif not txn.rcpts:
            self.chunk_refusal = _reply(503, "5.5.1", "Error: need RCPT command")
        elif self.chunks is None:
            self.chunks = []
            self.chunked = 0
            self.dropped = False
        if not self.chunk_left:
            self._chunk_done()

    def _chunk_done(self) -> None:
        """A BDAT chunk is in: answered, or, the last one, the message is."""
        if self.chunk_refusal is not None:
            self.out.append(self.chunk_refusal)
            self.chunk_refusal = None
            if self.chunk_last:  # the transaction ends here
                self.txn, self.chunks = None, None
            return
        if not self.chunk_last:
            self.out.append(b"250 2.0.0 %d octets received\r\n" % self.chunked)
            return
        chunks, self.chunks = self.chunks or [], None
        self._end_of_data(chunks[0] if len(chunks) == 1 else b"".join(chunks), stuffed=False)

    def _end_of_data(self, body: bytes, stuffed: bool = True) -> None:
        txn = self.txn
        assert txn is not None
        n = len(txn.rcpts)
        listener = self.listener
        refusal = None
        if txn.refused and txn.atomic:
            refusal = _reply(554, "5.5.0", f"Not every recipient was accepted ({ATOMIC}): nothing kept")
        elif self.dropped or len(body) > listener.max_bytes + 2:
            refusal = listener.too_big
        elif listener.max_line and len(body) > listener.max_line and longest_line(body) + 2 > listener.max_line:
            refusal = _reply(500, "5.5.2", "Line too long (see RFC 5321 4.5.3.1.6)")
        if refusal is not None:
            self.txn = None
            self.out.append(refusal * n)
            return
        self.busy = True
        listener.in_flight += 1
        listener.idle.clear()
        try:
            pending = listener.handler.data(txn, unstuff(body) if stuffed else body)
        except Exception as exc:  # noqa: BLE001 - the handler's bug: still one reply per recipient
            self._stored(txn, exc)
            return
        if isinstance(pending, asyncio.Future):
            pending.add_done_callback(lambda fut: self._stored(txn, fut))
        else:
            task = asyncio.ensure_future(pending)
            task.add_done_callback(lambda fut: self._stored(txn, fut))

    def _stored(self, txn: Transaction, outcome: "asyncio.Future | BaseException") -> None:
        listener = self.listener
        listener.in_flight -= 1
        if not listener.in_flight:
            listener.idle.set()
        n = len(txn.rcpts)
        error = outcome if isinstance(outcome, BaseException) else (
            outcome.exception() if not outcome.cancelled() else asyncio.CancelledError())
        if error is None:
            replies = outcome.result()  # type: ignore[union-attr]
            if len(replies) != n:
                error = RuntimeError(f"{len(replies)} replies for {n} recipients")
        if error is not None:
            log.error("lmtp_data_failed", error=repr(error), exc_info=error)
            self.out.append(_reply(451, "4.3.0", "Internal error, try again later") * n)
        else:
            self.out.append(b"".join(r.wire() for r in replies))
        self.txn = None
        self.busy = False
        self.chunk_last = False
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        if self.transport is None:
            return
        if self.buf:
            self._process()
        else:
            self._flush()

    def _rset(self, arg: str) -> None:
        self.txn = None
        self.chunks = None
        self.out.append(_OK)

    def _noop(self, arg: str) -> None:
        self.out.append(_OK)

    def _vrfy(self, arg: str) -> None:
        self.out.append(_reply(252, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery"))

    def _help(self, arg: str) -> None:
        self.out.append(_reply(214, "2.0.0", "Commands: LHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP XFORWARD"))

    def _quit(self, arg: str) -> None:
        self.out.append(_reply(221, "2.0.0", "Bye"))
        self.closing = True


_COMMANDS: dict[str, Callable[[LMTPConnection, str], None]] = {
    "LHLO": LMTPConnection._lhlo, "HELO": LMTPConnection._helo, "EHLO": LMTPConnection._helo,
    "XFORWARD": LMTPConnection._xforward, "MAIL": LMTPConnection._mail, "RCPT": LMTPConnection._rcpt,
    "DATA": LMTPConnection._data, "BDAT": LMTPConnection._bdat, "RSET": LMTPConnection._rset, "NOOP": LMTPConnection._noop,
    "VRFY": LMTPConnection._vrfy, "HELP": LMTPConnection._help, "QUIT": LMTPConnection._quit,
}


def _xtext_decode(value: str) -> str:
    if "+" not in value:
        return value
    out = bytearray()
    i = 0
    raw = value.encode("utf-8", "surrogateescape")
    while i < len(raw):
        if raw[i:i + 1] == b"+" and i + 2 < len(raw) and all(c in b"0123456789ABCDEFabcdef" for c in raw[i + 1:i + 3]):
            out.append(int(raw[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "replace")
