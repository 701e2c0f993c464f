"""Handing messages to several queue replicas (``queue.replicas``,
:mod:`correo_server.queuereplicas`): any ready replica will do.

:class:`QueuePool` has the interface of one :class:`.handoff.QueueClient`
(``deliver``, ``ping``, ``close``) over one client per replica, so the relay
does not know how many there are.  Each message goes to the next replica in
turn (round robin over the replicas that answered the last check first,
then the others), and a replica that **refuses or is down** costs a try of
the next one, never a ``451`` while another can take the message:

- it cannot be reached, or dies before the message was sent (nothing can be
  in its spool): the next one;
- it answers only temporary refusals (``421`` closing, ``452`` disk full,
  a draining replica's ``421`` at MAIL): it kept nothing (the hand-off is all
  or nothing, :mod:`.handoff`), the next one;
- anything else is the answer: ``250`` (the replica fsynced the message;
  the relay's ``250`` comes only after it), a permanent refusal, or a
  failure after the message was sent (the replica may hold it: the client
  hears ``451`` and its retry carries the same ``XDELIVERY-KEY``).

When every replica was down, they are all tried again, every 0.2 s, for
up to the clients' ``restart_wait`` (replicas restarting one after the
other cost a short wait, not a retry); when some refused, the last refusal
is the answer.  The ready check (``ping``) asks
every replica; the relay is ready while one answers.
"""
from __future__ import annotations

import asyncio
import itertools
import time

from .. import logs
from .handoff import HandoffError, Outcome, QueueClient

log = logs.get(__name__)


def _refused_without_keeping(outcome: Outcome) -> bool:
    """Did the replica refuse the whole message temporarily (keeping nothing)?"""
    return bool(outcome.replies) and all(r.temporary for r in outcome.replies)


class QueuePool:
    """One :class:`QueueClient` per replica, used as one."""

    def __init__(self, clients: list[QueueClient]) -> None:
        if not clients:
            raise ValueError("a queue pool needs at least one replica")
        self.clients = clients
        self.up = [True] * len(clients)  # what the last check said of each replica
        self._turn = itertools.count()

    @property
    def names(self) -> list[str]:
        return [f"{c.host}:{c.port}" for c in self.clients]

    def order(self) -> list[int]:
        """Replica indices to try for the next message: the ready ones from
        the next in turn, then the others."""
        n = len(self.clients)
        start = next(self._turn) % n
        ring = [(start + i) % n for i in range(n)]
        return [i for i in ring if self.up[i]] + [i for i in ring if not self.up[i]]

    async def ping(self) -> bool:
        results = await asyncio.gather(*(c.ping() for c in self.clients), return_exceptions=True)
        for i, ok in enumerate(results):
            ok = ok is True
            if ok != self.up[i]:
                log.info("queue_replica_reachable" if ok else "queue_replica_unreachable", replica=i,
                         queue=self.names[i])
            self.up[i] = ok
        return any(self.up)

    async def deliver(self, sender: str, recipients: list[str], data, **kwargs) -> Outcome:
        deadline: float | None = None
        while True:
            refusal: Outcome | None = None
            error: HandoffError | None = None
            for i in self.order():
                try:
                    outcome = await self.clients[i].deliver(sender, recipients, data, wait=False, **kwargs)
                except HandoffError as exc:
                    if exc.sent:
                        raise  # the replica may hold it: not a second copy elsewhere
                    self.up[i] = False
                    log.info("queue_replica_skipped", replica=i, queue=self.names[i], reason=str(exc))
                    error = exc
                    continue
                if not _refused_without_keeping(outcome):
                    return outcome
                log.info("queue_replica_refused", replica=i, queue=self.names[i],
                         reply=str(outcome.replies[0])[:120])
                refusal = outcome
            if refusal is not None:
                return refusal
            assert error is not None
            # Every replica was down: they are tried again for up to the
            # clients' restart wait (replicas restarting, one after the other).
            now = time.monotonic()
            if deadline is None:
                deadline = now + max(c.restart_wait for c in self.clients)
            if now + 0.2 > deadline:
                raise error
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)
