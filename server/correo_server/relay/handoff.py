"""Handing an accepted message to the queue over LMTP (RFC 2033), synchronously.

The relay answers its client only after the queue has answered: the queue
replies ``250`` for a recipient only once the message is fsynced in its
spool.  LMTP gives one reply per recipient after the data; SMTP gives the
client a single reply, so :func:`client_reply` folds them:

* every recipient ``250``                  → ``250 2.0.0`` (queued);
* every recipient refused permanently      → the queue's ``5xx`` (retrying cannot help);
* anything else (a ``4xx``, or a mixture)  → a ``4xx``: the client keeps the
  message and tries again later.  If the queue took the message for some
  recipients and not others, that retry may deliver it twice to the ones that
  took it; a second copy beats a lost one.

Recipients are sent to the queue before the data, and if the queue refuses
any of them there (e.g. ``452 4.3.1`` when its disk is full) the transaction
is reset before the data is sent, so the queue keeps nothing.  With
PIPELINING (RFC 2920; every LMTP server offers it, RFC 2033) ``MAIL``, the
``RCPT`` commands and ``DATA`` go in one write and the message follows the
``354``: two round trips per message instead of four.  Should the queue answer ``354``
although it refused a recipient, the connection is dropped instead of
sending the data, so that the queue still keeps nothing.  The queue
being unreachable, slow past ``timeout`` or talking nonsense ends in
``451 4.3.0``; the connection is then dropped, never reused.

Connections are kept open between messages (an idle pool of up to 32, so
that as many concurrent hand-offs do not open new connections each time; one
idle for longer than 30 s is closed instead of reused) and checked before
reuse; a pooled connection found dead before the data was sent is
replaced transparently.  :meth:`QueueClient.ping` (LHLO on a new connection,
NOOP on a pooled one) is what the relay's readiness reports.
"""
from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from dataclasses import dataclass, field

from .. import logs
from ..config import Listen
from .replies import Reply

log = logs.get(__name__)

_QUEUED_AS = re.compile(r"queued as\s+<?([A-Za-z0-9._@:+-]+)>?", re.I)
MAX_REPLY_LINES = 100


class HandoffError(Exception):
    """The queue could not be asked (unreachable, timed out, protocol error)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind  # "unreachable", "timeout", "protocol"
        self.detail = detail


class _Stale(Exception):
    """A pooled connection turned out dead before anything was committed."""


@dataclass
class Outcome:
    """What the queue said about one message."""

    recipients: list[str]
    replies: list[Reply]  # one per recipient, in order (RCPT or DATA stage)
    stage: str  # "mail", "rcpt" or "data": where the transaction ended

    @property
    def queue_id(self) -> str | None:
        for reply in self.replies:
            m = _QUEUED_AS.search(reply.text)
            if m:
                return m.group(1)
        return None


def client_reply(outcome: Outcome | HandoffError, relay_id: str) -> Reply:
    """The one SMTP reply the client gets (see the module docstring)."""
    if isinstance(outcome, HandoffError):
        return Reply(451, "4.3.0", "Queue unavailable; message not accepted, try again later", "queue_unavailable")
    replies = outcome.replies
    if replies and all(r.code == 250 for r in replies):
        return Reply(250, "2.0.0", f"Ok: queued as {outcome.queue_id or relay_id}")
    if replies and all(r.permanent for r in replies):
        first = replies[0]
        return Reply(first.code if 500 <= first.code < 600 else 554, first.status if first.status.startswith("5.")
                     else "5.0.0", f"Queue refused the message: {_printable(first.text)}", "queue_refused")
    temporary = [r for r in replies if r.temporary]
    if temporary and all(r.code != 250 for r in replies):
        first = temporary[0]
        status = first.status if first.status.startswith("4.") else "4.3.0"
        return Reply(first.code, status, f"Queue deferred the message: {_printable(first.text)}; try again later",
                     "queue_deferred")
    return Reply(451, "4.3.0", "Queue accepted the message for only some recipients; try again later",
                 "queue_partial")


def _printable(text: str) -> str:
    return "".join(ch if " " <= ch <= "~" else "?" for ch in text)[:200]


def dot_stuff(data: bytes) -> bytes:
    """RFC 5321 section 4.5.2 transparency for a piece of a message that
    starts at the beginning of a line (copies only when there is a dot to stuff)."""
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..")


def data_lines(pieces: list[bytes]) -> list[bytes]:
    """What goes on the wire after ``354``: the stuffed pieces, a CRLF if the
    message does not end with one, and the end marker."""
    out = [dot_stuff(p) for p in pieces if p]
    if out and not out[-1].endswith(b"\r\n"):
        out.append(b"\r\n")
    out.append(b".\r\n")
    return out


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    extensions: set[str] = field(default_factory=set)
    last_used: float = 0.0

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:  # already gone
            pass

    @property
    def alive(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()


class QueueClient:
    """LMTP client for the queue at ``listen``, with a small connection pool."""

    def __init__(self, listen: Listen, *, local_hostname: str, timeout: float = 120.0,
                 connect_timeout: float = 10.0, max_idle: int = 32, idle_seconds: float = 30.0) -> None:
        self.host = "127.0.0.1" if listen.host in ("0.0.0.0", "") else ("::1" if listen.host == "::" else listen.host)
        self.port = listen.port
        self.local_hostname = local_hostname
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self.idle_seconds = idle_seconds
        self._idle: deque[_Connection] = deque()

    # -- connections -------------------------------------------------------
    async def _read_reply(self, conn: _Connection) -> Reply:
        return (await self._read_replies(conn, 1))[0]

    async def _read_replies(self, conn: _Connection, n: int) -> list[Reply]:
        """The next ``n`` replies (of a pipelined group), within one timeout."""
        try:
            async with asyncio.timeout(self.timeout):  # one timer, not a task per line like wait_for
                return [Reply.parse(*await self._read_lines(conn)) for _ in range(n)]
        except asyncio.TimeoutError:
            raise HandoffError("timeout", "no reply from the queue") from None

    async def _read_lines(self, conn: _Connection) -> tuple[int, list[str]]:
        """One reply's code and lines (the caller sets the timeout)."""
        lines: list[str] = []
        code = 0
        while True:
            try:
                raw = await conn.reader.readline()
            except (ValueError, asyncio.LimitOverrunError):
                raise HandoffError("protocol", "reply line too long") from None
            if not raw.endswith(b"\n"):
                raise HandoffError("unreachable", "connection closed by the queue")
            line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            if len(line) < 3 or not line[:3].isdigit() or (len(line) > 3 and line[3] not in " -"):
                raise HandoffError("protocol", f"bad reply line {line[:60]!r}")
            if code and int(line[:3]) != code:
                raise HandoffError("protocol", "reply code changed within a multi-line reply")
            code = int(line[:3])
            lines.append(line[4:])
            if len(line) == 3 or line[3] == " ":
                return code, lines
            if len(lines) > MAX_REPLY_LINES:
                raise HandoffError("protocol", "reply too long")

    async def _send(self, conn: _Connection, data: bytes | list[bytes]) -> None:
        try:
            if isinstance(data, list):
                conn.writer.writelines(data)
            else:
                conn.writer.write(data)
            async with asyncio.timeout(self.timeout):
                await conn.writer.drain()
        except asyncio.TimeoutError:
            raise HandoffError("timeout", "the queue does not read") from None
        except (ConnectionError, OSError) as exc:
            raise HandoffError("unreachable", str(exc) or type(exc).__name__) from None

    async def _command(self, conn: _Connection, line: str) -> Reply:
        await self._send(conn, line.encode("utf-8") + b"\r\n")
        return await self._read_reply(conn)

    async def _open(self) -> _Connection:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=64 * 1024), self.connect_timeout)
        except asyncio.TimeoutError:
            raise HandoffError("timeout", f"connecting to {self.host}:{self.port}") from None
        except OSError as exc:
            raise HandoffError("unreachable", f"{self.host}:{self.port}: {exc.strerror or exc}") from None
        conn = _Connection(reader, writer)
        try:
            greeting = await self._read_reply(conn)
            if greeting.code != 220:
                raise HandoffError("unreachable", f"greeting {greeting}")
            await self._send(conn, f"LHLO {self.local_hostname}\r\n".encode("utf-8"))
            try:
                async with asyncio.timeout(self.timeout):
                    code, lines = await self._read_lines(conn)
            except asyncio.TimeoutError:
                raise HandoffError("timeout", "no reply from the queue") from None
            if code != 250:
                raise HandoffError("protocol", f"LHLO refused: {code} {' '.join(lines)[:100]}")
        except BaseException:
            conn.close()
            raise
        # The first line is the server's name; each further line names an extension.
        conn.extensions = {line.split(" ", 1)[0].upper() for line in lines[1:]}
        return conn

    async def _acquire(self) -> tuple[_Connection, bool]:
        """A connection and whether it came from the pool."""
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.alive and now - conn.last_used < self.idle_seconds:
                return conn, True
            conn.close()
        return await self._open(), False

    def _release(self, conn: _Connection) -> None:
        if not conn.alive or len(self._idle) >= self.max_idle:
            conn.close()
            return
        conn.last_used = time.monotonic()
        self._idle.append(conn)

    async def close(self) -> None:
        while self._idle:
            conn = self._idle.pop()
            try:
                conn.writer.write(b"QUIT\r\n")
            except Exception:
                pass
            conn.close()

    # -- operations ----------------------------------------------------------
    async def ping(self) -> bool:
        """Does the queue answer?  (LHLO on a new connection, NOOP on a pooled one.)"""
        try:
            conn, pooled = await self._acquire()
        except HandoffError:
            return False
        try:
            if pooled:
                reply = await self._command(conn, "NOOP")
                if reply.code != 250:
                    conn.close()
                    return await self.ping() if reply.code == 421 else False
        except HandoffError:
            conn.close()
            if pooled:
                return await self.ping()
            return False
        self._release(conn)
        return True

    async def deliver(self, sender: str, recipients: list[str], data: bytes | list[bytes], *,
                      smtputf8: bool = False, body: str | None = None) -> Outcome:
        """Run one LMTP transaction for the message ``data`` (bytes, or pieces
        each starting at a line start, to spare a copy of a large message).
        Raises :class:`HandoffError` when the queue cannot be asked; otherwise
        returns what it said."""
        if isinstance(data, bytes):
            data = [data]
        for _attempt in range(3):
            conn, pooled = await self._acquire()
            try:
                outcome = await self._transaction(conn, pooled, sender, recipients, data, smtputf8, body)
            except _Stale:
                conn.close()
                continue
            except BaseException:
                conn.close()
                raise
            self._release(conn)
            return outcome
        raise HandoffError("unreachable", "pooled connections kept failing")

    async def _transaction(self, conn: _Connection, pooled: bool, sender: str, recipients: list[str],
                           data: list[bytes], smtputf8: bool, body: str | None) -> Outcome:
        params = []
        if smtputf8 and "SMTPUTF8" in conn.extensions:
            params.append("SMTPUTF8")
        if body == "8BITMIME" and "8BITMIME" in conn.extensions:
            params.append("BODY=8BITMIME")
        if "SIZE" in conn.extensions:
            params.append(f"SIZE={sum(len(p) for p in data)}")
        mail = f"MAIL FROM:<{sender}>" + "".join(" " + p for p in params)
        rcpts = [f"RCPT TO:<{r}>" for r in recipients]
        start: Reply | None = None  # the reply to a pipelined DATA
        try:
            if "PIPELINING" in conn.extensions:
                await self._send(conn, ("\r\n".join([mail, *rcpts, "DATA"]) + "\r\n").encode("utf-8"))
                mail_reply, *rcpt_replies, start = await self._read_replies(conn, len(rcpts) + 2)
            else:
                mail_reply = await self._command(conn, mail)
                rcpt_replies = []
                if mail_reply.code == 250:
                    for line in rcpts:
                        rcpt_replies.append(await self._command(conn, line))
        except HandoffError as exc:
            if pooled and exc.kind == "unreachable":
                raise _Stale() from None
            raise
        if pooled and mail_reply.code == 421:
            raise _Stale()
        if mail_reply.code != 250:
            await self._end_refused(conn, start)
            return Outcome(recipients, [mail_reply] * len(recipients), "mail")
        if not rcpt_replies or any(r.code not in (250, 251) for r in rcpt_replies):
            await self._end_refused(conn, start)
            return Outcome(recipients, rcpt_replies, "rcpt")
        if start is None:
            start = await self._command(conn, "DATA")
        if start.code != 354:
            await self._reset(conn)
            return Outcome(recipients, [start] * len(recipients), "data")
        await self._send(conn, data_lines(data))
        replies = await self._read_replies(conn, len(recipients))
        return Outcome(recipients, replies, "data")

    async def _end_refused(self, conn: _Connection, data_reply: Reply | None) -> None:
        """After a refusal at MAIL or RCPT: reset, unless a pipelined DATA was
        answered ``354`` (the queue waits for data it must not get): then the
        connection is dropped, which ends the transaction with nothing kept."""
        if data_reply is not None and data_reply.code == 354:
            conn.close()
            return
        await self._reset(conn)

    async def _reset(self, conn: _Connection) -> None:
        """End a refused transaction; a connection that cannot is dropped
        (the refusal stands either way)."""
        try:
            reply = await self._command(conn, "RSET")
        except HandoffError:
            conn.close()
            return
        if reply.code != 250:
            conn.close()
