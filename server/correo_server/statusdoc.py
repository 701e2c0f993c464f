"""The JSON the services publish on ``GET /status``: its shape, defined once.

The queue and the mailstore build these documents; the control plane (the
operator's status timer and ``correo status``) reads them with one shared
function and turns them into MailDomain and Mailbox status.  Times are RFC 3339
strings in UTC (``2026-11-27T05:47:02Z``); ages are whole seconds.  Keys are
camelCase, like the CRD status fields they feed.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import NotRequired, TypedDict


class LastError(TypedDict):
    destination: str  # "mx1.example.org" (MX host), "smarthost.example:587", "mailstore"
    error: str  # the remote reply or local reason, e.g. "451 4.7.1 greylisted"
    time: str


class Bounce(TypedDict):
    queueId: str
    sender: str
    recipient: str
    reason: str  # "550 5.1.1 no such user", "gave up after 5 days: 451 ..."
    time: str


class Delayed(TypedDict):
    queueId: str
    sender: str
    recipient: str
    destination: str
    lastError: str
    since: str  # when the message was queued
    ageSeconds: int


class QueueFigures(TypedDict):
    active: int  # recipients not yet in a final state (pending + deferred)
    deferred: int  # recipients waiting for a retry after a temporary failure
    delayedNoticesSent: int  # "delayed" DSNs sent (cumulative)
    bounced: int  # recipients returned as failed (cumulative)
    delivered: int  # recipients delivered (cumulative)
    oldestDeferredAgeSeconds: int  # 0 when nothing is deferred
    lastErrors: list[LastError]  # one per destination, newest first
    delayed: list[Delayed]  # recipients deferred past warnAfterSeconds
    lastBounces: list[Bounce]  # newest first, at most 20


class SenderFigures(TypedDict):
    deferred: int
    bounced: int
    delayedNoticesSent: int
    delivered: int
    lastBounce: Bounce | None
    lastDelivery: str | None  # time of the last successful delivery of mail it sent


class QueueStatus(TypedDict):
    service: str  # "queue"
    ready: bool
    time: str
    totals: QueueFigures
    # Figures per hosted domain: a message counts for the domain of its sender
    # when that is hosted, else for the hosted domain of its first recipient.
    domains: dict[str, QueueFigures]
    # Figures per hosted sending mailbox (canonical address).
    senders: dict[str, SenderFigures]
    # What the relays refused, per hosted domain (correo_server.refusalreport):
    # {"refused": n, "byReason": {"spf": n, ...}, "last": {...}}, cumulative.
    refusals: NotRequired[dict]


class Refusal(TypedDict):
    time: str
    reason: str  # the LMTP reply, e.g. "552 5.2.2 <carol@example.com>: mailbox is full"


class MailboxUsage(TypedDict):
    messages: int
    bytes: int
    quotaBytes: int
    lastDelivery: str | None
    # Optional (the mailstore sends both; documents from before lack them):
    # incoming mail refused for this mailbox since the mailstore started, for
    # the mailbox's sake: suspended (550 5.2.1) or over quota (552 5.2.2, or
    # 452 4.2.2 when deferred); and the last such refusal (None: none yet).
    refused: NotRequired[int]
    lastRefusal: NotRequired[Refusal | None]
    # The mail rules in force and their errors (mailstore.rules.report.mailbox_rules):
    # adminScript, userScript, autoReply, errors, lastError {time, script, message}
    rules: NotRequired[dict]
    # Messages delivered into the Junk folder (spam filter, DMARC quarantine)
    # since the mailstore started.
    junk: NotRequired[int]


class MailstoreStatus(TypedDict):
    service: str  # "mailstore"
    ready: bool
    time: str
    mailboxes: dict[str, MailboxUsage]  # by canonical address


class RelayStatus(TypedDict):
    service: str  # "relay"
    ready: bool  # the queue answers
    time: str
    accepted: int
    rejected: int
    # What this relay refused since it started, per hosted domain, by reason
    # (correo_server.refusalreport: {"refused", "byReason", "last"}); the
    # queue's ``refusals`` adds up every relay's, across restarts.
    refused: NotRequired[dict]


def empty_figures() -> QueueFigures:
    return QueueFigures(active=0, deferred=0, delayedNoticesSent=0, bounced=0, delivered=0,
                        oldestDeferredAgeSeconds=0, lastErrors=[], delayed=[], lastBounces=[])


def rfc3339(ts: float | datetime) -> str:
    if not isinstance(ts, datetime):
        ts = datetime.fromtimestamp(ts, tz=timezone.utc)
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
