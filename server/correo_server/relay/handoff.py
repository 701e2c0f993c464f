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
sending the data, so that the queue still keeps nothing.  A queue that
offers CHUNKING (RFC 3030) and correo's ``XATOMIC`` gets ``MAIL ...
XATOMIC``, the ``RCPT`` commands, ``BDAT <size> LAST`` and the message in
one write: one round trip; ``XATOMIC`` makes it refuse the message for
everyone when it refused anyone (:mod:`correo_server.wire.server`), so it
still keeps nothing then.  The queue
being unreachable, slow past ``timeout`` or talking nonsense ends in
``451 4.3.0``; the connection is then dropped, never reused.

Connections are kept open between messages (an idle pool of up to 32, so
that as many concurrent hand-offs do not open new connections each time; one
idle for longer than 30 s is closed instead of reused) and checked before
reuse; a pooled connection found dead before the data was sent is
replaced transparently.  :meth:`QueueClient.ping` (LHLO on a new connection,
NOOP on a pooled one) is what the relay's readiness reports.

The connections are :class:`correo_server.wire.client.Connection`, the one
client the queue also uses for its deliveries; the relay's id of the
message goes along as ``XFORWARD IDENT`` so that the queue's log line names
it, and its message key as ``XDELIVERY-KEY`` (:mod:`correo_server.deliverykeys`),
so that the client's second attempt after a lost ``250`` is known.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque

from .. import deliverykeys, logs
from ..config import Listen
from ..wire.client import Connection, Failure, Outcome
from ..wire.data import chunk_pieces, data_lines, dot_stuff
from ..wire.server import ATOMIC
from ..wire.replies import Reply

log = logs.get(__name__)

__all__ = ["HandoffError", "Outcome", "QueueClient", "client_reply", "data_lines", "dot_stuff"]


class HandoffError(Exception):
    """The queue could not be asked (unreachable, timed out, protocol error)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind  # "unreachable", "timeout", "protocol"
        self.detail = detail
        self.sent = False  # the message had been sent (the queue may have kept it)

    @classmethod
    def from_failure(cls, exc: Failure) -> "HandoffError":
        return cls(exc.kind if exc.kind != "tls" else "protocol", exc.reply.text)


class _Stale(Exception):
    """A pooled connection turned out dead before anything was committed."""


def client_reply(outcome: Outcome | HandoffError, relay_id: str) -> Reply:
    """The one SMTP reply the client gets (see the module docstring)."""
    if isinstance(outcome, HandoffError):
        return Reply(451, "4.3.0", "Queue unavailable; message not accepted, try again later", "queue_unavailable")
    replies = outcome.replies
    if replies and all(r.ok for r in replies):
        return Reply(250, "2.0.0", f"Ok: queued as {outcome.queued_as or relay_id}")
    if replies and all(r.permanent for r in replies):
        first = replies[0]
        status = first.enhanced if first.enhanced.startswith("5.") else "5.0.0"
        return Reply(first.code, status, f"Queue refused the message: {_printable(first.text)}", "queue_refused")
    temporary = [r for r in replies if r.temporary]
    if temporary and not any(r.ok for r in replies):
        first = temporary[0]
        code = first.code if 400 <= first.code < 500 else 451
        status = first.enhanced if first.enhanced.startswith("4.") else "4.3.0"
        return Reply(code, status, f"Queue deferred the message: {_printable(first.text)}; try again later",
                     "queue_deferred")
    return Reply(451, "4.3.0", "Queue accepted the message for only some recipients; try again later",
                 "queue_partial")


_ONE_WRITE = {"PIPELINING", "CHUNKING", ATOMIC}  # what the queue must offer for a one-round-trip hand-off


def _printable(text: str) -> str:
    return "".join(ch if " " <= ch <= "~" else "?" for ch in text)[:200]


class QueueClient:
    """LMTP client for the queue at ``listen``, with a small connection pool."""

    def __init__(self, listen: Listen, *, local_hostname: str, timeout: float = 120.0,
                 connect_timeout: float = 10.0, max_idle: int = 32, idle_seconds: float = 30.0,
                 restart_wait: float = 0.0) -> None:
        self.host = "127.0.0.1" if listen.host in ("0.0.0.0", "") else ("::1" if listen.host == "::" else listen.host)
        self.port = listen.port
        self.local_hostname = local_hostname
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self.idle_seconds = idle_seconds
        # A queue that refuses connections is given this long to come back
        # before the client hears 451: a queue restarting (a new configuration,
        # a crash) costs the client a short wait, not a retry.  Nothing has
        # been sent then, so trying again cannot deliver twice.
        self.restart_wait = restart_wait
        self._idle: deque[Connection] = deque()

    # -- connections -------------------------------------------------------
    async def _open(self) -> Connection:
        try:
            conn = await Connection.open(self.host, self.host, self.port, connect_timeout=self.connect_timeout,
                                         timeout=self.timeout)
        except Failure as exc:
            raise HandoffError.from_failure(exc) from None
        try:
            greeting = conn.greeting
            if greeting is None or greeting.code != 220:
                raise HandoffError("unreachable", f"greeting {greeting}")
            reply = await conn.hello(self.local_hostname, lmtp=True)
            if reply.code != 250:
                raise HandoffError("protocol", f"LHLO refused: {str(reply)[:100]}")
        except Failure as exc:
            conn.abort()
            raise HandoffError.from_failure(exc) from None
        except BaseException:
            conn.abort()
            raise
        return conn

    async def _acquire(self, *, wait: bool = False) -> tuple[Connection, bool]:
        """A connection and whether it came from the pool (``wait``: give a
        queue that refuses connections ``restart_wait`` seconds)."""
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.alive and now - conn.last_used < self.idle_seconds:
                return conn, True
            conn.abort()
        deadline = now + (self.restart_wait if wait else 0.0)
        while True:
            try:
                return await self._open(), False
            except HandoffError as exc:
                if exc.kind != "unreachable" or time.monotonic() + 0.2 > deadline:
                    raise
            await asyncio.sleep(0.2)

    def _release(self, conn: Connection) -> None:
        if not conn.alive or len(self._idle) >= self.max_idle:
            conn.abort()
            return
        conn.last_used = time.monotonic()
        self._idle.append(conn)

    async def close(self) -> None:
        while self._idle:
            conn = self._idle.pop()
            try:
                conn.transport.write(b"QUIT\r\n")
            except Exception:  # noqa: BLE001 - already gone
                pass
            conn.abort()

    # -- operations ----------------------------------------------------------
    async def ping(self) -> bool:
        """Does the queue answer?  (LHLO on a new connection, NOOP on a pooled one.)"""
        try:
            conn, pooled = await self._acquire()
        except HandoffError:
            return False
        if pooled:
            try:
                reply = await conn.command("NOOP")
            except Failure:
                conn.abort()
                return await self.ping()
            if reply.code != 250:
                conn.abort()
                return await self.ping() if reply.code == 421 else False
        self._release(conn)
        return True

    async def deliver(self, sender: str, recipients: list[str], data: bytes | list[bytes], *,
                      smtputf8: bool = False, body: str | None = None, ident: str | None = None,
                      key: str | None = None, params: tuple[str, ...] = (), wait: bool = True) -> Outcome:
        """Run one LMTP transaction for the message ``data`` (bytes, or pieces
        each starting at a line start, to spare a copy of a large message).
        ``key``: the message key (:mod:`correo_server.deliverykeys`), sent
        when the queue offers ``XDELIVERY-KEY``.  ``params``: further MAIL
        parameters (``XVERDICT=spf``), each sent when the queue announces its
        keyword.  Raises :class:`HandoffError` when the queue cannot be asked
        (its ``sent`` says whether the message had gone out: only then may
        the queue hold it); otherwise returns what it said.  ``wait``: give a
        queue that refuses connections ``restart_wait`` (the pool of several
        replicas tries the next one instead)."""
        pieces = [data] if isinstance(data, bytes) else data
        payload: list[bytes] | None = None
        content: list[bytes] | None = None
        size = sum(len(p) for p in pieces)
        for _attempt in range(3):
            conn, pooled = await self._acquire(wait=wait)
            keyed = (f"{deliverykeys.EXTENSION}={key}",) if key and deliverykeys.EXTENSION in conn.extensions else ()
            offered = tuple(p for p in params if p.partition("=")[0].upper() in conn.extensions)
            if _ONE_WRITE <= conn.extensions.keys():  # MAIL, RCPT, BDAT and the message in one write
                content = content if content is not None else chunk_pieces(pieces)
            elif payload is None:
                payload = data_lines(pieces)
            try:
                outcome = await conn.transaction(sender, recipients, payload or [], size=size, smtputf8=smtputf8,
                                                 body8=body == "8BITMIME", ident=ident, all_or_nothing=True,
                                                 mail_params=keyed + offered,
                                                 content=content if _ONE_WRITE <= conn.extensions.keys() else None)
            except Failure as exc:
                conn.abort()
                if pooled and not conn.payload_sent and exc.kind == "unreachable":
                    continue  # the queue closed an idle connection: nothing was committed
                error = HandoffError.from_failure(exc)
                error.sent = conn.payload_sent
                raise error from None
            except BaseException:
                conn.abort()
                raise
            if pooled and outcome.stage == "mail" and outcome.replies and outcome.replies[0].code == 421:
                conn.abort()  # the queue is closing this connection: try a fresh one
                continue
            if any(r.code == 421 for r in outcome.replies):
                conn.abort()
            self._release(conn)
            return outcome
        raise HandoffError("unreachable", "pooled connections kept failing")
