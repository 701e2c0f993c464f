"""LMTP delivery into the mailstore (RFC 2033), on aiosmtpd's ``LMTP`` protocol.

The queue hands every local recipient over here.  ``RCPT TO`` refuses
addresses nobody owns (``550 5.1.1``); after ``DATA`` every accepted
recipient gets its own reply, decided by :mod:`.lmtp_policy` (suspended,
over quota, disk full; the first two are also recorded for the mailbox's
``/status`` entry, :mod:`.refusals`) and, when the decision is to store, by the store
itself (:meth:`~.store.Store.deliver`, which enforces quota and free space
again under the mailbox lock, so two deliveries racing cannot both slip
under the quota).  ``250`` is sent only once ``deliver`` has returned, i.e.
the message file and its directory are fsynced and the index row committed:
an acknowledged message is never lost.

Addresses resolve through the directory (``Directory.lookup``: aliases,
alias domains, ``+detail``).  The queue has already expanded forwards and
sends final mailboxes; an address arriving here whose entry forwards with
``keepCopy: false`` is stored in that mailbox anyway, because the queue
decided this copy is to be kept (re-forwarding from here would bypass the
queue's retries and bounces).  Two recipients of one transaction that are
the same mailbox (an address and its alias) get one copy, and both a 250.

The message is stored byte for byte: aiosmtpd runs with ``decode_data=False``
(bytes, no charset decoding), only the SMTP transparency dot is removed, and
the line-length limit is raised to the size limit so that long lines (and
8-bit or binary bodies) pass unchanged.  Two trace headers are prepended:
``Return-Path:`` and ``Delivered-To:``.

Size limit: ``mailstore.maxLiteralBytes`` (64 MiB by default), the same
ceiling as an IMAP APPEND, so the mailstore accepts by LMTP anything a client
could store by IMAP, and more than the queue accepts (25 MiB) plus the
headers added on the way.  It is announced with ``SIZE`` in the LHLO reply.
"""
from __future__ import annotations

import asyncio
import errno
import time
import weakref

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import Envelope, Session

from .. import logs
from ..config import Listen
from ..smtpbase import Speedups
from . import lmtp_policy as policy
from . import maildir
from . import store as storemod
from .context import MailstoreContext
from .refusals import is_mailbox_refusal

log = logs.get(__name__)

IDENT = "correo LMTP"
SHUTDOWN_GRACE_SECONDS = 30.0

# Per listener: its handler and open connections, for a clean shutdown.
_listeners: "weakref.WeakKeyDictionary[asyncio.AbstractServer, tuple[DeliveryHandler, set]]" = \
    weakref.WeakKeyDictionary()


def register_metrics(metrics) -> None:
    metrics.counter("mailstore_deliveries_total",
                    "LMTP recipients by result: delivered, rejected (5xx), deferred (4xx)")
    metrics.counter("mailstore_delivered_bytes_total", "Octets stored by LMTP deliveries")
    metrics.counter("mailstore_lmtp_sessions_total", "LMTP connections")


class DeliveryHandler:
    """aiosmtpd handler hooks (``handle_<VERB>``) for the mailstore's LMTP."""

    def __init__(self, ctx: MailstoreContext) -> None:
        self.ctx = ctx
        self.in_flight = 0  # DATA commands being stored now
        self.idle = asyncio.Event()
        self.idle.set()

    def _directory(self):
        return self.ctx.directory.get()

    async def handle_EHLO(self, server: LMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        # RFC 2033 section 5: an LMTP server must support PIPELINING and
        # ENHANCEDSTATUSCODES (aiosmtpd reads commands one by one off the
        # stream, so pipelined commands simply queue up).
        session.host_name = hostname
        self.ctx.metrics.inc("mailstore_lmtp_sessions_total")
        return [responses[0], "250-PIPELINING", "250-ENHANCEDSTATUSCODES", *responses[1:]]

    async def handle_MAIL(self, server: LMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(self, server: LMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        refusal = policy.rcpt_reply(address, self._directory().lookup(address))
        if refusal is not None:
            self.ctx.metrics.inc("mailstore_deliveries_total", result="rejected")
            log.info("lmtp_rcpt_refused", rcpt=address, reply=str(refusal))
            return str(refusal)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server: LMTP, session: Session, envelope: Envelope) -> str:
        self.in_flight += 1
        self.idle.clear()
        try:
            return await self._data(envelope)
        except Exception as exc:  # never one reply where LMTP owes one per recipient
            log.exception("lmtp_data_failed", error=repr(exc))
            return "\r\n".join([str(policy.store_failed())] * len(envelope.rcpt_tos))
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self.idle.set()

    async def _data(self, envelope: Envelope) -> str:
        content = envelope.original_content
        if isinstance(content, str):  # never with decode_data=False; be safe anyway
            content = content.encode("utf-8", "surrogateescape")
        content = bytes(content or b"")
        sender = envelope.mail_from or ""
        directory = self._directory()
        # One delivery per mailbox (an address and its alias in one transaction
        # get one copy); different mailboxes are written concurrently, each
        # under its own lock in the store.
        targets: list[tuple[str, str | None]] = []  # (rcpt, mailbox key or None)
        first_rcpt: dict[str, tuple[str, object]] = {}
        for rcpt in envelope.rcpt_tos:
            entry = directory.lookup(rcpt)
            key = entry.address.lower() if entry is not None else None
            targets.append((rcpt, key))
            if key is not None and key not in first_rcpt:
                first_rcpt[key] = (rcpt, entry)
        if len(first_rcpt) == 1:  # the usual case: no task to make
            ((rcpt, entry),) = first_rcpt.values()
            try:
                outcomes: list = [await self._deliver_one(sender, rcpt, entry, content)]
            except Exception as exc:  # noqa: BLE001 - as gather(return_exceptions=True) would hand it over
                outcomes = [exc]
        else:
            outcomes = await asyncio.gather(*(self._deliver_one(sender, rcpt, entry, content)
                                              for rcpt, entry in first_rcpt.values()), return_exceptions=True)
        by_mailbox: dict[str, policy.Reply] = {}
        for key, outcome in zip(first_rcpt, outcomes):
            if isinstance(outcome, BaseException):
                if isinstance(outcome, asyncio.CancelledError):
                    raise outcome
                log.error("lmtp_delivery_failed", mailbox=key, error=repr(outcome))
                outcome = policy.store_failed()
            by_mailbox[key] = outcome
        replies = [by_mailbox[key] if key is not None else policy.unknown(rcpt) for rcpt, key in targets]
        for reply in replies:
            result = "delivered" if reply.ok else "deferred" if reply.temporary else "rejected"
            self.ctx.metrics.inc("mailstore_deliveries_total", result=result)
        # One reply line per RCPT that got 250, in RCPT order (RFC 2033 section 4.2).
        return "\r\n".join(str(r) for r in replies)

    async def _deliver_one(self, sender: str, rcpt: str, entry, content: bytes) -> policy.Reply:
        cfg = self.ctx.config.mailstore
        store = self.ctx.store
        message = policy.trace_headers(sender, rcpt) + content
        used = 0
        if entry is not None:
            try:
                used = (await store.usage(entry.address)).bytes
            except (storemod.StoreError, OSError) as exc:
                log.error("lmtp_usage_failed", rcpt=rcpt, error=str(exc))
                return policy.store_failed()
        try:
            free = maildir.free_bytes(store.data_dir)
        except OSError:
            free = None
        refusal = policy.delivery_reply(
            rcpt, entry, message_bytes=len(message), used_bytes=used,
            over_quota_policy=cfg.over_quota, free_bytes=free, min_free_bytes=cfg.min_free_bytes)
        if refusal is not None:
            log.info("lmtp_refused", rcpt=rcpt, reply=str(refusal))
            self._note_refusal(entry, refusal)
            return refusal
        assert entry is not None
        try:
            uid = await store.deliver(entry.address, message)
        except storemod.QuotaExceeded as exc:  # another delivery took the room since the check above
            reply = policy.over_quota_reply(rcpt, cfg.over_quota, used_bytes=exc.usage, quota_bytes=exc.quota)
        except storemod.DiskFull:
            reply = policy.disk_full()
        except OSError as exc:
            if maildir.is_disk_full(exc) or exc.errno == errno.EROFS:
                reply = policy.disk_full()
            else:
                log.error("lmtp_store_failed", rcpt=rcpt, error=str(exc))
                reply = policy.store_failed()
        except storemod.StoreError as exc:
            log.error("lmtp_store_failed", rcpt=rcpt, error=str(exc))
            reply = policy.store_failed()
        else:
            self.ctx.metrics.inc("mailstore_delivered_bytes_total", len(message))
            log.info("lmtp_delivered", rcpt=rcpt, mailbox=entry.address, uid=uid, size=len(message))
            return policy.stored(rcpt, uid)
        log.info("lmtp_refused", rcpt=rcpt, reply=str(reply))
        self._note_refusal(entry, reply)
        return reply

    def _note_refusal(self, entry, reply: policy.Reply) -> None:
        """Suspended and over-quota refusals go on the mailbox's /status entry."""
        if entry is not None and is_mailbox_refusal(reply):
            now = (self.ctx.clock or time.time)()
            self.ctx.refusals.record(entry.address, str(reply), now)

    async def handle_exception(self, error: Exception) -> str:
        log.error("lmtp_error", error=repr(error))
        return "451 4.3.0 internal error, try again later"


# aiosmtpd's own refusals of a message after DATA, given once; LMTP owes one
# reply per accepted recipient (RFC 2033 section 4.2), or the client waits forever.
_DATA_REFUSALS = {
    "552 Error: Too much mail data": "552 5.3.4 message too big for this system",
    "500 Line too long (see RFC5321 4.5.3.1.6)": "500 5.5.2 line too long",
}


class _LMTP(Speedups, LMTP):
    """aiosmtpd's LMTP (made cheaper by :class:`~correo_server.smtpbase.Speedups`)
    with a per-instance line-length limit (aiosmtpd reads it when it builds its
    StreamReader, in ``__init__``), and aiosmtpd's single post-DATA refusals
    repeated once per recipient."""

    def __init__(self, handler, *, line_length_limit: int, **kwargs) -> None:
        self.line_length_limit = line_length_limit
        super().__init__(handler, **kwargs)

    async def push(self, status) -> None:
        if isinstance(status, str) and status in _DATA_REFUSALS and self.envelope and self.envelope.rcpt_tos:
            status = "\r\n".join([_DATA_REFUSALS[status]] * len(self.envelope.rcpt_tos))
        await super().push(status)


def size_limit(ctx: MailstoreContext) -> int:
    return ctx.config.mailstore.max_literal_bytes


async def serve_lmtp(ctx: MailstoreContext, listen: Listen) -> asyncio.AbstractServer:
    """Start the LMTP listener (plain TCP: it is internal, reached from the queue
    only, which the NetworkPolicy enforces on Kubernetes)."""
    register_metrics(ctx.metrics)
    handler = DeliveryHandler(ctx)
    limit = size_limit(ctx)
    loop = asyncio.get_running_loop()
    live: "weakref.WeakSet[_LMTP]" = weakref.WeakSet()

    def factory() -> _LMTP:
        protocol = _LMTP(
            handler,
            line_length_limit=limit + 2,
            data_size_limit=limit,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=ctx.config.hostname,
            ident=IDENT,
            timeout=300,
            loop=loop,
        )
        live.add(protocol)
        return protocol

    server = await loop.create_server(factory, listen.host, listen.port, reuse_address=True)
    _listeners[server] = (handler, live)
    return server


async def shutdown(server: asyncio.AbstractServer, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
    """Stop accepting, let deliveries being stored finish (their 250 goes out),
    then close every connection.  A transaction cut off before its reply was
    sent is not acknowledged, so the queue tries it again: nothing is lost."""
    server.close()
    handler, live = _listeners.get(server, (None, ()))
    if handler is not None and not handler.idle.is_set():
        try:
            await asyncio.wait_for(handler.idle.wait(), grace)
        except TimeoutError:
            log.warning("lmtp_shutdown_with_deliveries_in_flight", count=handler.in_flight)
        await asyncio.sleep(0)  # let the replies be written
    for protocol in list(live):
        transport = protocol.transport
        if transport is not None:
            transport.close()
    await server.wait_closed()
