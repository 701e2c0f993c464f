"""The queue's front door: an LMTP listener (RFC 2033, aiosmtpd) for the relay.

After DATA every accepted recipient gets its own reply, and ``250`` only once
the message and its envelope are on disk (:meth:`.intake.Intake.accept`
returns after the file and the spool folder were fsynced).  What goes wrong
gets the reply a mail client expects:

- free space under ``queue.minFreeBytes`` (at MAIL, and again before writing),
  or the disk fills while writing: ``452 4.3.1``, nothing kept;
- a message over ``queue.maxMessageBytes`` (announced with SIZE, or sent
  anyway): ``552 5.3.4``;
- an unknown address of a hosted domain: ``550 5.1.1`` at RCPT.

aiosmtpd's own replies for those cases are rewritten with enhanced status
codes, and repeated once per recipient after DATA as LMTP requires.
"""
from __future__ import annotations

import asyncio
import errno

from aiosmtpd.lmtp import LMTP

from .. import logs
from ..config import Listen
from ..metrics import Registry
from ..smtpbase import Speedups
from .intake import Intake, Refusal, dedupe
from .spool import Spool, SpoolFull

log = logs.get(__name__)

MAX_RECIPIENTS = 1000
FULL = "452 4.3.1 Insufficient system storage, try again later"

_REWRITE_AFTER_DATA = {
    "552 Error: Too much mail data": "552 5.3.4 Message size exceeds fixed maximum message size",
    "500 Line too long (see RFC5321 4.5.3.1.6)": "500 5.5.2 Line too long (see RFC 5321 4.5.3.1.6)",
}
_REWRITE = {
    "552 Error: message size exceeds fixed maximum message size":
        "552 5.3.4 Message size exceeds fixed maximum message size",
    "503 Error: need MAIL command": "503 5.5.1 Error: need MAIL command",
    "503 Error: need RCPT command": "503 5.5.1 Error: need RCPT command",
    "503 Error: nested MAIL command": "503 5.5.1 Error: nested MAIL command",
}


class QueueLMTP(Speedups, LMTP):
    """aiosmtpd's LMTP (made cheaper by :class:`~correo_server.smtpbase.Speedups`)
    with enhanced status codes and per-recipient errors."""

    async def push(self, status):  # type: ignore[override]
        if isinstance(status, str):
            if status in _REWRITE_AFTER_DATA:
                n = len(self.envelope.rcpt_tos) if self.envelope is not None else 0
                status = "\r\n".join([_REWRITE_AFTER_DATA[status]] * max(n, 1))
            else:
                status = _REWRITE.get(status, status)
        await super().push(status)


class Handler:
    """aiosmtpd hooks (``handle_MAIL`` ...) in front of :class:`Intake`."""

    def __init__(self, intake: Intake, spool: Spool, max_message_bytes: int, metrics: Registry) -> None:
        self.intake = intake
        self.spool = spool
        self.max_message_bytes = max_message_bytes
        self.metrics = metrics

    async def handle_EHLO(self, server, session, envelope, hostname: str, responses: list[str]) -> list[str]:
        # RFC 2033 section 5: an LMTP server must offer PIPELINING and
        # ENHANCEDSTATUSCODES (aiosmtpd reads pipelined commands one by one).
        session.host_name = hostname
        return [responses[0], "250-PIPELINING", "250-ENHANCEDSTATUSCODES", *responses[1:]]

    async def handle_MAIL(self, server, session, envelope, address: str, mail_options: list[str]) -> str:
        if not self.spool.has_room():
            self.metrics.inc("queue_rejected_total", reason="disk_full")
            return FULL
        for opt in mail_options:
            key, _, value = opt.partition("=")
            if key == "SIZE" and value.isdigit() and int(value) > self.max_message_bytes:
                return "552 5.3.4 Message size exceeds fixed maximum message size"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.correo_rcpts = []
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server, session, envelope, address: str, rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        found = self.intake.expand(address)
        if isinstance(found, Refusal):
            self.metrics.inc("queue_rejected_total", reason="unknown_recipient")
            return found.reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        envelope.correo_rcpts.append(found)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope) -> str:
        accepted = list(envelope.rcpt_tos)
        data: bytes = envelope.original_content or b""

        def each(reply: str) -> str:
            return "\r\n".join([reply] * len(accepted))

        if len(data) > self.max_message_bytes:
            return each("552 5.3.4 Message size exceeds fixed maximum message size")
        sender = "" if envelope.mail_from in ("<>", "") else envelope.mail_from
        body = "8BITMIME" if "BODY=8BITMIME" in envelope.mail_options else "7BIT"
        try:
            msg = await self.intake.accept(sender, dedupe(envelope.correo_rcpts), data,
                                           smtputf8=bool(envelope.smtp_utf8), body=body)
        except SpoolFull:
            self.metrics.inc("queue_rejected_total", reason="disk_full")
            return each(FULL)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                self.metrics.inc("queue_rejected_total", reason="disk_full")
                return each(FULL)
            log.error("spool_write_failed", error=str(exc))
            self.metrics.inc("queue_rejected_total", reason="spool_error")
            return each("451 4.3.0 Local error writing the queue file, try again later")
        self.metrics.inc("queue_enqueued_total")
        log.info("queued", queue_id=msg.id, size=len(data), recipients=len(msg.env.recipients))
        return "\r\n".join(f"250 2.0.0 <{rcpt}> Ok: queued as {msg.id}" for rcpt in accepted)


async def start_listener(listen: Listen, handler: Handler, *, hostname: str, max_message_bytes: int,
                         timeout: float = 300) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()

    def factory() -> QueueLMTP:
        return QueueLMTP(handler, hostname=hostname, ident="correo queue", data_size_limit=max_message_bytes,
                         enable_SMTPUTF8=True, decode_data=False, timeout=timeout, loop=loop)

    return await loop.create_server(factory, host=listen.host, port=listen.port, reuse_address=True)
