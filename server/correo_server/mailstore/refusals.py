"""Incoming mail the mailstore refused, per mailbox, since it started.

:mod:`.lmtp` records every recipient it refuses for a reason that belongs
to the mailbox — RFC 3463 "mailbox status" replies, ``X.2.X``: suspended
(``550 5.2.1``), over quota (``552 5.2.2``, or ``452 4.2.2`` when the
queue is told to retry) — not unknown addresses (there is no mailbox) nor a
full disk or a failed write (the server's trouble, not the mailbox's).
:mod:`.status` puts the count and the last refusal on each mailbox's
``/status`` entry (``refused``, ``lastRefusal``), so that the control plane
can tell a mailbox owner why mail is not arriving.  Kept in memory: the
figures count from the process start, like the metrics.
"""
from __future__ import annotations

from dataclasses import dataclass

from .lmtp_policy import Reply


def is_mailbox_refusal(reply: Reply) -> bool:
    """A refusal that says something about the mailbox (``X.2.X``)."""
    return not reply.ok and reply.status.split(".")[1:2] == ["2"]


@dataclass(frozen=True)
class Refusals:
    count: int = 0
    last_time: float | None = None  # Unix time of the last refusal
    last_reason: str | None = None  # its reply, e.g. "552 5.2.2 <a@example.com>: mailbox is full"


class RefusalLog:
    """Refusals by canonical mailbox address (lower case)."""

    def __init__(self) -> None:
        self._by_mailbox: dict[str, Refusals] = {}

    def record(self, mailbox: str, reason: str, when: float) -> None:
        key = mailbox.lower()
        self._by_mailbox[key] = Refusals(self.get(key).count + 1, when, reason)

    def get(self, mailbox: str) -> Refusals:
        return self._by_mailbox.get(mailbox.lower(), Refusals())
