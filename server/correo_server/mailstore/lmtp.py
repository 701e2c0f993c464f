"""LMTP delivery into the mailstore (RFC 2033), on the wire layer's lean server
(:mod:`correo_server.wire.server`).

The queue hands every local recipient over here.  ``RCPT TO`` refuses
addresses nobody owns (``550 5.1.1``); after ``DATA`` every accepted
recipient gets its own reply, decided by :mod:`.lmtp_policy` (suspended,
over quota, disk full; the first two are also recorded for the mailbox's
``/status`` entry, :mod:`.refusals`) and, when the decision is to store, by the store
itself (:class:`Deliveries`, which stores what arrives together as one
group commit and enforces quota and free space message by message under
the mailbox lock, so two deliveries racing cannot both slip under the
quota).  ``250`` is sent only once the delivery has returned, i.e.
the message file and its directory are fsynced and the index row committed:
an acknowledged message is never lost.

Addresses resolve through the directory (``Directory.recipient``: aliases,
alias domains, subaddresses, the domain's catch-all).  A mailbox with mail
rules (Sieve scripts, an auto-reply) or an address with a subaddress is
delivered by :mod:`.rules.delivery` instead of the group commit into INBOX.
The queue has already expanded forwards and sends final mailboxes; an
address arriving here whose entry forwards with ``keepCopy: false`` is
stored in that mailbox anyway, because the queue decided this copy is to be
kept (re-forwarding from here would bypass the queue's retries and bounces).  Two recipients of one transaction that are
the same mailbox (an address and its alias) get one copy, and both a 250.

Exactly once: the queue gives each recipient a key (``RCPT TO:<...>
XDELIVERY-KEY=<key>``, offered in the LHLO reply; :mod:`correo_server.deliverykeys`),
committed with the message's index row; a delivery whose key is already
there (the queue repeating a delivery whose ``250`` was lost when this
process died) is answered ``250`` and not stored again.  A repeated
delivery skips the quota check before the write (the first copy counts
towards the usage now): the store decides under the mailbox lock, after
looking the key up.

Mail the relay marked as junk (``X-Spam-Flag: YES``: rspamd's ``add
header``, DMARC ``quarantine``) goes into the mailbox's ``Junk`` folder
instead of INBOX, and is counted for its ``/status`` entry (:mod:`.junk`).

The message is stored byte for byte: bytes, no charset decoding, only the
SMTP transparency dot removed, no line-length limit (long lines and 8-bit
or binary bodies pass unchanged).  Two trace headers are prepended:
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

from .. import deliverykeys, faults, logs
from ..config import Listen
from ..wire.replies import Reply
from ..wire.server import Listener, Transaction
from . import junk as junkmod
from . import lmtp_policy as policy
from . import maildir
from . import store as storemod
from .context import MailstoreContext
from .refusals import is_mailbox_refusal

log = logs.get(__name__)

IDENT = "correo LMTP"
SHUTDOWN_GRACE_SECONDS = 30.0

# Per listening socket: its wire listener, for a clean shutdown.
_listeners: "weakref.WeakKeyDictionary[asyncio.AbstractServer, Listener]" = weakref.WeakKeyDictionary()


def register_metrics(metrics) -> None:
    metrics.counter("mailstore_deliveries_total",
                    "LMTP recipients by result: delivered, rejected (5xx), deferred (4xx)")
    metrics.counter("mailstore_delivered_bytes_total", "Octets stored by LMTP deliveries")
    metrics.counter("mailstore_lmtp_sessions_total", "LMTP connections")
    metrics.counter("mailstore_repeated_deliveries_total",
                    "LMTP deliveries answered 250 without storing: their key was already delivered")
    metrics.counter("mailstore_junk_deliveries_total", "Messages delivered into Junk (spam filter, DMARC quarantine)")


class Deliveries:
    """Deliveries into mailboxes, gathered per mailbox: those asked for in
    one turn of the event loop, and those that arrive while the mailbox's
    previous batch is being written, go to disk together
    (:meth:`~.store.Folder.append_many`: one thread call, each file fsynced,
    one fsync of the folder and one index transaction for all: group
    commit, as the queue's spool does)."""

    def __init__(self, store: storemod.Store) -> None:
        self.store = store
        # a writer runs for each mailbox: (message, its delivery keys, its future)
        self._pending: dict[str, list[tuple[bytes, tuple[str, ...], asyncio.Future]]] = {}

    def deliver(self, address: str, message: bytes, keys: tuple[str, ...] = (),
                folder: str = "INBOX") -> "asyncio.Future[int | Exception]":
        """The message's UID in the mailbox's ``folder`` (INBOX, or Junk)
        once it is on disk, or what refused it (QuotaExceeded, DiskFull,
        OSError).  ``keys``: the delivery's idempotency keys; a repeat gets
        the first copy's UID as :class:`~.store.AlreadyDelivered`."""
        fut = asyncio.get_running_loop().create_future()
        key = address.lower() if folder == "INBOX" else f"{address.lower()}\0{folder}"
        batch = self._pending.get(key)
        if batch is None:
            batch = self._pending[key] = []
            asyncio.ensure_future(self._writer(key, address, folder))
        batch.append((message, keys, fut))
        return fut

    async def _writer(self, key: str, address: str, name: str = "INBOX") -> None:
        await asyncio.sleep(0)  # what else this turn delivers here joins the batch
        try:
            while batch := self._pending.get(key):
                self._pending[key] = []
                try:
                    mbox = await self.store.mailbox(address)
                    try:
                        folder = await mbox.folder(name)
                    except storemod.NoSuchFolder:  # Junk, deleted by its owner: made again
                        folder = await mbox.create(name)
                    keys = [k for _, k, _ in batch]
                    results: list = await folder.append_many([m for m, _, _ in batch], delivery=True,
                                                             keys=keys if any(keys) else None)
                except Exception as exc:  # noqa: BLE001 - the folder as a whole failed: each delivery says so
                    results = [exc] * len(batch)
                for (_, _, fut), result in zip(batch, results):
                    if not fut.done():
                        fut.set_result(result)
        finally:
            for _, _, fut in self._pending.pop(key, []):  # cancelled at shutdown
                if not fut.done():
                    fut.set_result(storemod.StoreError("mailstore stopping"))


class DeliveryHandler:
    """The wire server's handler (:class:`correo_server.wire.server.Handler`)
    for the mailstore's LMTP."""

    def __init__(self, ctx: MailstoreContext) -> None:
        self.ctx = ctx
        self.deliveries = Deliveries(ctx.store)

    def _directory(self):
        return self.ctx.directory.get()

    def mail(self, txn: Transaction) -> Reply | None:
        return None

    def rcpt(self, txn: Transaction, address: str, params: dict) -> Reply | None:
        key = params.get(deliverykeys.EXTENSION)
        if key is not None and not deliverykeys.valid(key):
            return Reply(501, "5.5.4", f"{deliverykeys.EXTENSION} needs 1 to 64 letters, digits, '.', '-' or '_'")
        entry = self._directory().recipient(address)
        refusal = policy.rcpt_reply(address, entry) or policy.wrong_shard(entry, self.ctx.config.mailstore.shard)
        if refusal is None and entry.address.lower() in self.ctx.store.fenced:
            refusal = policy.moving(entry.address)
        if refusal is not None:
            self.ctx.metrics.inc("mailstore_deliveries_total", result="rejected")
            log.info("lmtp_rcpt_refused", rcpt=address, reply=str(refusal), queue_id=txn.ident or None)
            return refusal
        txn.notes.append(key)  # one note per accepted recipient: its delivery key, or None
        return None

    async def data(self, txn: Transaction, content: bytes) -> list[Reply]:
        sender = txn.sender
        directory = self._directory()
        # One delivery per mailbox (an address and its alias in one transaction
        # get one copy); different mailboxes are written concurrently, each
        # under its own lock in the store.
        targets: list[tuple[str, str | None]] = []  # (rcpt, mailbox key or None)
        first_rcpt: dict[str, tuple[str, object]] = {}
        delivery_keys: dict[str, tuple[str, ...]] = {}  # mailbox → the delivery keys of its recipients
        for rcpt, dkey in zip(txn.rcpts, txn.notes):
            entry = directory.recipient(rcpt)
            key = entry.address.lower() if entry is not None else None
            targets.append((rcpt, key))
            if key is not None and key not in first_rcpt:
                first_rcpt[key] = (rcpt, entry)
            if key is not None and dkey:
                delivery_keys[key] = delivery_keys.get(key, ()) + (dkey,)
        if len(first_rcpt) == 1:  # the usual case: no task to make
            ((key, (rcpt, entry)),) = first_rcpt.items()
            try:
                outcomes: list = [await self._deliver_one(txn, sender, rcpt, entry, content,
                                                          delivery_keys.get(key, ()))]
            except Exception as exc:  # noqa: BLE001 - as gather(return_exceptions=True) would hand it over
                outcomes = [exc]
        else:
            outcomes = await asyncio.gather(*(self._deliver_one(txn, sender, rcpt, entry, content,
                                                                delivery_keys.get(key, ()))
                                              for key, (rcpt, entry) in first_rcpt.items()),
                                            return_exceptions=True)
        by_mailbox: dict[str, Reply] = {}
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
        faults.point("mailstore.lmtp.stored")  # stored, the replies not yet sent (crash tests)
        # One reply per RCPT that got 250, in RCPT order (RFC 2033 section 4.2).
        return replies

    async def _deliver_one(self, txn: Transaction, sender: str, rcpt: str, entry, content: bytes,
                           keys: tuple[str, ...] = ()) -> Reply:
        cfg = self.ctx.config.mailstore
        store = self.ctx.store
        message = policy.trace_headers(sender, rcpt) + content
        used = 0
        if entry is not None and not keys:  # with keys, the store checks the quota after the keys
            try:
                used = (await store.usage(entry.address)).bytes
            except (storemod.StoreError, OSError) as exc:
                log.error("lmtp_usage_failed", rcpt=rcpt, error=str(exc))
                return policy.store_failed()
        # Free space is checked where the message is written (DiskFull below).
        refusal = policy.delivery_reply(rcpt, entry, message_bytes=len(message), used_bytes=used,
                                        over_quota_policy=cfg.over_quota)
        if refusal is not None:
            log.info("lmtp_refused", rcpt=rcpt, reply=str(refusal), queue_id=txn.ident or None)
            self._note_refusal(entry, refusal)
            return refusal
        assert entry is not None
        folder = junkmod.folder_for(content)
        rules = self.ctx.rules  # mail rules (Sieve, auto-reply, subaddress folders): .rules.delivery
        if rules is not None and rules.wanted(entry, rcpt):
            # The rules count what they file into Junk themselves (their keep of junk goes there).
            result = await rules.deliver(sender, rcpt, entry, message, txn.ident or None, keys=keys,
                                         junk=folder == junkmod.JUNK)
            folder = "rules"
            if isinstance(result, Reply):  # refused, or nothing kept (discarded, redirected)
                log.info("lmtp_rules_replied", rcpt=rcpt, mailbox=entry.address, reply=str(result),
                         queue_id=txn.ident or None)
                return result
        else:
            result = await self.deliveries.deliver(entry.address, message, keys, folder)
        if isinstance(result, storemod.AlreadyDelivered):
            self.ctx.metrics.inc("mailstore_repeated_deliveries_total")
            log.info("lmtp_already_delivered", rcpt=rcpt, mailbox=entry.address, uid=int(result),
                     queue_id=txn.ident or None)
            return policy.stored(rcpt, int(result))
        if isinstance(result, int):
            self.ctx.metrics.inc("mailstore_delivered_bytes_total", len(message))
            if folder == junkmod.JUNK:
                self.ctx.junk.record(entry.address)
                self.ctx.metrics.inc("mailstore_junk_deliveries_total")
            log.info("lmtp_delivered", rcpt=rcpt, mailbox=entry.address, uid=result, size=len(message),
                     queue_id=txn.ident or None, **({"folder": folder} if folder not in ("INBOX", "rules") else {}))
            return policy.stored(rcpt, result)
        if isinstance(result, storemod.MailboxMoving):  # fenced for a move while it waited
            reply = policy.moving(rcpt)
        elif isinstance(result, storemod.QuotaExceeded):  # other deliveries took the room since the check above
            reply = policy.over_quota_reply(rcpt, cfg.over_quota, used_bytes=result.usage, quota_bytes=result.quota)
        elif isinstance(result, storemod.DiskFull):
            reply = policy.disk_full()
        elif isinstance(result, OSError) and (maildir.is_disk_full(result) or result.errno == errno.EROFS):
            reply = policy.disk_full()
        else:
            log.error("lmtp_store_failed", rcpt=rcpt, error=str(result))
            reply = policy.store_failed()
        log.info("lmtp_refused", rcpt=rcpt, reply=str(reply), queue_id=txn.ident or None)
        self._note_refusal(entry, reply)
        return reply

    def _note_refusal(self, entry, reply: Reply) -> None:
        """Suspended and over-quota refusals go on the mailbox's /status entry."""
        if entry is not None and is_mailbox_refusal(reply):
            now = (self.ctx.clock or time.time)()
            self.ctx.refusals.record(entry.address, str(reply), now)


def size_limit(ctx: MailstoreContext) -> int:
    return ctx.config.mailstore.max_literal_bytes


async def serve_lmtp(ctx: MailstoreContext, listen: Listen) -> asyncio.AbstractServer:
    """Start the LMTP listener (plain TCP: it is internal, reached from the queue
    only, which the NetworkPolicy enforces on Kubernetes)."""
    register_metrics(ctx.metrics)
    handler = DeliveryHandler(ctx)
    listener = Listener(handler, hostname=ctx.config.hostname, max_bytes=size_limit(ctx), max_line=None,
                        timeout=300, ident=IDENT, extensions=(deliverykeys.EXTENSION,),
                        on_connection=lambda: ctx.metrics.inc("mailstore_lmtp_sessions_total"))
    server = await listener.start(listen.host, listen.port)
    _listeners[server] = listener
    return server


async def shutdown(server: asyncio.AbstractServer, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
    """Stop accepting, let deliveries being stored finish (their 250 goes out),
    then close every connection.  A transaction cut off before its reply was
    sent is not acknowledged, so the queue tries it again: nothing is lost."""
    listener = _listeners.get(server)
    if listener is None:
        server.close()
        await server.wait_closed()
        return
    await listener.close(grace)
