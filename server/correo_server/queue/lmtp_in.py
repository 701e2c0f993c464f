"""The queue's front door: an LMTP listener (RFC 2033) for the relay, on the
wire layer's lean server (:mod:`correo_server.wire.server`).

After DATA every accepted recipient gets its own reply, and ``250`` only once
the message and its envelope are on disk (:meth:`.intake.Intake.accept`
returns after the spool's fsync, :mod:`.spool`).  What goes wrong gets the
reply a mail client expects:

- free space under ``queue.minFreeBytes`` (at MAIL, and again before writing),
  or the disk fills while writing: ``452 4.3.1``, nothing kept;
- a message over ``queue.maxMessageBytes`` (announced with SIZE, or sent
  anyway): ``552 5.3.4``;
- a line longer than the relay allows (plus its transparency dot and CRLF,
  at least RFC 5321's 1000 octets): ``500 5.5.2``;
- an unknown address of a hosted domain: ``550 5.1.1`` at RCPT.

``XVERDICT`` (a private MAIL parameter, announced in the LHLO reply) says
that the relay accepted the message although its sender failed SPF or DMARC
(:mod:`correo_server.backscatter.verdict`); the envelope keeps it, and the
queue then sends that sender no notice.  ``XOWNER=<domain>`` (the mailstore
passing on a Sieve redirect) names the hosted domain the message belongs
to when its envelope has no hosted address (:mod:`correo_server.srs`: the
domain whose SRS key rewrites its sender).

Each of those is repeated once per recipient after DATA, as LMTP requires.

One id per message: the relay names each message (its ``Received:`` header's
``id``) and passes the name with ``XFORWARD IDENT``; the queue keeps it as the
queue id, so that the client's ``queued as``, the relay's, the queue's and
the mailstore's logs, ``correo queue`` and the header all say the same (as
Postfix's queue id does).  A name that is not a plain id, or one already in
the queue, gets a queue id of its own (the relay logs both then).

``MAIL FROM:<...> XDELIVERY-KEY=<key>`` (offered in the LHLO reply) is the
relay's message key (:mod:`correo_server.deliverykeys`): a message the spool
already holds under that key is answered with the first copy's id instead
of being spooled twice.

``MAIL FROM:<...> XTRANSFER=<n>`` (offered in the LHLO reply) is another
queue replica handing over a message as it drains (:mod:`.handover`): the
first ``n`` octets of the data are the envelope and the state it had there;
the recipients are taken as they were expanded then, and the ``250`` comes
once the message is on disk here with its history.
"""
from __future__ import annotations

import errno
import re

from .. import deliverykeys, logs
from ..config import Listen
from ..metrics import Registry
from ..wire.replies import Reply
from ..backscatter import verdict as verdictmod
from ..srs import OWNER_PARAM
from ..wire.server import Listener, Transaction
from . import handover
from .intake import Intake, Refusal, dedupe
from .records import figures_event
from .spool import Spool, SpoolFull

log = logs.get(__name__)

MAX_RECIPIENTS = 1000
FULL = Reply(452, "4.3.1", "Insufficient system storage, try again later")
TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
WRITE_FAILED = Reply(451, "4.3.0", "Local error writing the queue file, try again later")


_IDENT = re.compile(r"[0-9A-Z]{8,32}")  # the relay's ids (and the queue's own): safe as file names


class Handler:
    """The wire server's handler (:class:`correo_server.wire.server.Handler`)
    in front of :class:`Intake`."""

    def __init__(self, intake: Intake, spool: Spool, max_message_bytes: int, metrics: Registry) -> None:
        self.intake = intake
        self.spool = spool
        self.max_message_bytes = max_message_bytes
        self.metrics = metrics
        self._adopting: set[str] = set()  # client ids being written now
        self.transfer_key: bytes | None = None  # what transfers must be signed with (handover.transfer_key)

    def _adopt(self, ident: str) -> str | None:
        """The client's id as the queue id when it can be one (see the module
        docstring); None for a queue id of the queue's own."""
        if (not ident or not _IDENT.fullmatch(ident) or ident in self._adopting
                or self.intake.state.get(ident) is not None or self.spool.exists(ident)):
            return None
        return ident

    def mail(self, txn: Transaction) -> Reply | None:
        transfer = txn.params.get(handover.EXTENSION)
        if transfer is not None and not (transfer.isdigit() and 0 < int(transfer) <= handover.MAX_STATE_BYTES):
            return Reply(501, "5.5.4", f"{handover.EXTENSION} needs the length of the state part")
        size = txn.params.get("SIZE")
        if transfer is None and size is not None and int(size) > self.max_message_bytes:
            return TOO_BIG  # (the listener's limit leaves room for a transfer's state part)
        key = txn.params.get(deliverykeys.EXTENSION)
        if key is not None and not deliverykeys.valid(key):
            return Reply(501, "5.5.4", f"{deliverykeys.EXTENSION} needs 1 to 64 letters, digits, '.', '-' or '_'")
        if not self.spool.has_room():
            self.metrics.inc("queue_rejected_total", reason="disk_full")
            return FULL
        return None

    def rcpt(self, txn: Transaction, address: str, params: dict) -> Reply | None:
        if handover.EXTENSION in txn.params:
            return None  # a transfer: its recipients come expanded, with their state, in the data
        found = self.intake.expand(address)
        if isinstance(found, Refusal):
            self.metrics.inc("queue_rejected_total", reason="unknown_recipient")
            return found.reply
        txn.notes.append(found)
        return None

    async def data(self, txn: Transaction, data: bytes) -> list[Reply]:
        n = len(txn.rcpts)
        transfer = txn.params.get(handover.EXTENSION)
        if transfer is not None:
            return [await self._transfer(data, int(transfer))] * n
        if len(data) > self.max_message_bytes:
            return [TOO_BIG] * n
        msg_id = self._adopt(txn.ident)
        if msg_id:
            self._adopting.add(msg_id)
        try:
            msg = await self.intake.accept(txn.sender, dedupe(txn.notes), data, smtputf8=txn.smtputf8,
                                           body="8BITMIME" if txn.body == "8BITMIME" else "7BIT", msg_id=msg_id,
                                           key=txn.params.get(deliverykeys.EXTENSION) or "",
                                           unverified=verdictmod.from_params(txn.params),
                                           created_by=(txn.params.get(OWNER_PARAM) or "").lower())
        except SpoolFull:
            self.metrics.inc("queue_rejected_total", reason="disk_full")
            return [FULL] * n
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                self.metrics.inc("queue_rejected_total", reason="disk_full")
                return [FULL] * n
            log.error("spool_write_failed", error=str(exc))
            self.metrics.inc("queue_rejected_total", reason="spool_error")
            return [WRITE_FAILED] * n
        finally:
            self._adopting.discard(msg_id)
        self.metrics.inc("queue_enqueued_total")
        log.debug("queued", queue_id=msg.id, **({"relay_id": txn.ident} if txn.ident and txn.ident != msg.id else {}),
                  size=len(data), recipients=len(msg.env.recipients))
        return [Reply(250, "2.0.0", f"<{rcpt}> Ok: queued as {msg.id}") for rcpt in txn.rcpts]

    async def _transfer(self, blob: bytes, length: int) -> Reply:
        """A message a leaving replica hands over (:mod:`.handover`): ``250``
        only once it is on disk here with its state."""
        try:
            found = handover.decode(blob, length, self.transfer_key)
        except handover.TransferError as exc:
            log.warning("transfer_refused", error=str(exc))
            return Reply(554, "5.6.0", f"Transfer refused: {exc}")
        if isinstance(found[0], str):  # the leaving replica's figures: added once, durably, then 250
            token, figures = found
            ev = figures_event(token, self.intake.clock.now(), figures)
            assert self.spool.journal is not None
            fut = self.spool.journal.append([ev])
            self.intake.state.apply(ev)
            await fut
            log.info("figures_taken_over", token=token)
            return Reply(250, "2.0.0", "Ok: figures taken over")
        env, data = found
        held = self.intake.state.get(env.id)
        if held is not None and not handover.same_message(held.env, env):
            return Reply(451, "4.3.0", f"Queue id {env.id} is taken here by another message; try another replica")
        if len(data) > self.max_message_bytes:
            return TOO_BIG
        if not self.spool.has_room(len(blob)):
            self.metrics.inc("queue_rejected_total", reason="disk_full")
            return FULL
        try:
            msg, new = await self.intake.adopt(env, data)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                self.metrics.inc("queue_rejected_total", reason="disk_full")
                return FULL
            log.error("spool_write_failed", error=str(exc))
            return WRITE_FAILED
        if new:
            self.metrics.inc("queue_taken_over_total")
            assert msg is not None
            log.info("message_taken_over", queue_id=env.id, from_replica=(env.handed or {}).get("from"),
                     pending=sum(1 for r in msg.rcpts if not r.final), delay_notice_sent=msg.delayed_notified)
        else:
            log.info("message_taken_over_already", queue_id=env.id)
        return Reply(250, "2.0.0", f"Ok: taken over as {env.id}")


# The listener's size limit leaves room for a transfer's state part
# (:mod:`.handover`); mail itself is held to max_message_bytes by the handler.
TRANSFER_ALLOWANCE = handover.MAX_STATE_BYTES


async def start_listener(listen: Listen, handler: Handler, *, hostname: str, max_message_bytes: int,
                         max_line: int = 1001, timeout: float = 300) -> Listener:
    """Listen for the relay; the :class:`~correo_server.wire.server.Listener`
    (its ``server`` is the asyncio server) is what the service stops."""
    listener = Listener(handler, hostname=hostname, max_bytes=max_message_bytes + TRANSFER_ALLOWANCE,
                        max_line=max(max_line, 1001),
                        max_recipients=MAX_RECIPIENTS, timeout=timeout, ident="correo queue LMTP",
                        extensions=(deliverykeys.EXTENSION, verdictmod.PARAM, OWNER_PARAM, handover.EXTENSION))
    await listener.start(listen.host, listen.port)
    return listener
