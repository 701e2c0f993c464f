"""Handing what mail rules make to the queue: vacation replies, redirects, reject notices.

They leave as new messages through the queue (``mailstore.queue``, its LMTP
listener, the same one the relay hands to), so that they get the queue's
retries, delay notices and bounces like any other mail; the mailstore never
speaks SMTP to the world.  One connection per message (these are rare next
to deliveries): LHLO, the transaction (:meth:`correo_server.wire.client.Connection.transaction`,
all recipients or none), QUIT.

:meth:`QueueSubmitter.submit` returns the queue's id once the queue has the
message on disk (its ``250``), and raises :class:`SubmitFailed` with the
reply otherwise (queue unreachable, refused, timeout): the caller decides
whether that fails the delivery (a redirect) or is only logged (a reply).
"""
from __future__ import annotations

from ...config import Listen
from ...sieve import OutgoingMessage
from ...srs import OWNER_PARAM
from ...wire.client import Connection, Failure
from ...wire.data import wire_data
from ...wire.replies import Reply

CONNECT_TIMEOUT = 30.0
TIMEOUT = 120.0


class SubmitFailed(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


class QueueSubmitter:
    def __init__(self, queue: Listen, hostname: str, *, connect_timeout: float = CONNECT_TIMEOUT,
                 timeout: float = TIMEOUT) -> None:
        self.queue = queue
        self.hostname = hostname
        self.connect_timeout = connect_timeout
        self.timeout = timeout

    async def submit(self, message: OutgoingMessage, *, owner: str = "") -> str:
        """The queue's id of the message (or "" when it named none).
        ``owner``: the hosted domain the message is passed on for (a
        redirect: the mailbox's), so that the queue signs its SRS sender there."""
        host = self.queue.host if self.queue.host not in ("0.0.0.0", "::") else "127.0.0.1"
        try:
            conn = await Connection.open("queue", host, self.queue.port, connect_timeout=self.connect_timeout,
                                         timeout=self.timeout)
        except Failure as exc:
            raise SubmitFailed(exc.reply) from None
        try:
            hello = await conn.hello(self.hostname, lmtp=True)
            if not hello.ok:
                raise SubmitFailed(hello)
            data = message.data
            outcome = await conn.transaction(message.sender, list(message.recipients), wire_data(data),
                                             size=len(data), smtputf8=not all(
                                                 r.isascii() for r in (message.sender, *message.recipients)),
                                             body8=not data.isascii(), all_or_nothing=True,
                                             mail_params=(f"{OWNER_PARAM}={owner}",)
                                             if owner and OWNER_PARAM in conn.extensions else ())
            refused = [r for r in outcome.replies if not r.ok]
            if refused:
                raise SubmitFailed(refused[0])
            return outcome.queued_as or ""
        except Failure as exc:
            raise SubmitFailed(exc.reply) from None
        finally:
            await conn.quit()
