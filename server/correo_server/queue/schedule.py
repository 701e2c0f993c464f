"""Retry, warning and give-up decisions: pure functions of the state and a time.

The runner asks; these answer.  Nothing here reads a clock or touches the
disk, so the whole Sendmail-style cycle (retry with backoff, one "delayed"
notice after ``warnAfterSeconds``, a failure notice after
``giveUpAfterSeconds`` or at once on a 5xx) is testable with plain numbers.

The policy used is the one of the domain the message belongs to
(:func:`.ownership.owner_of`, the same owner ``/status`` counts it under):
the sender's hosted domain, else the hosted domain of its first recipient,
and so on; the default policy only when no domain is configured.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..backscatter.verdict import owes_notices
from ..config import RetryPolicy, ServerConfig
from .ownership import owner_of
from .records import BOUNCED, DEFERRED, DELIVERED, PENDING, Envelope, Message

NOTICE_RETRY_SECONDS = 60.0  # when writing a notice failed (disk full...), try again after this
# Our own mailstore not answering means it is restarting (a pod being
# rescheduled, a crashed process): try again within seconds, not the
# policy's minutes.  Its real 4xx replies (over quota...) follow the policy.
HOP_DOWN_RETRY_MAX_SECONDS = 30.0


def policy_for(cfg: ServerConfig, env: Envelope) -> RetryPolicy:
    domain = owner_of(cfg, env)
    return domain.retry if domain is not None else RetryPolicy()


def reply_class(code: int) -> str:
    """'ok', 'temporary' or 'permanent' for an SMTP/LMTP reply code."""
    if 200 <= code < 400:
        return "ok"
    if 500 <= code < 600:
        return "permanent"
    return "temporary"


def human_duration(seconds: float) -> str:
    seconds = int(seconds)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0 or seconds >= 2 * size:
            n = round(seconds / size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


@dataclass(frozen=True)
class Outcome:
    state: str  # delivered, deferred, bounced
    next_attempt: float = 0.0
    reason: str = ""  # what is recorded as the reply (bounces: why)


def after_attempt(policy: RetryPolicy, arrival: float, attempts: int, now: float, code: int,
                  reply: str, *, hop_down: bool = False) -> Outcome:
    """What becomes of a recipient after its ``attempts``-th attempt got ``code``.

    ``hop_down``: the next hop is our own mailstore and it could not be reached
    (so the retry comes after 1, 2, 4 … seconds, at most 30)."""
    kind = reply_class(code)
    if kind == "ok":
        return Outcome(DELIVERED, reason=reply)
    if kind == "permanent":
        return Outcome(BOUNCED, reason=reply)
    give_up_at = arrival + policy.give_up_after_seconds
    if now >= give_up_at:
        return Outcome(BOUNCED, reason=f"gave up after {human_duration(policy.give_up_after_seconds)}: {reply}")
    delay = policy.delay_after(attempts)
    if hop_down:
        delay = min(delay, 2.0 ** min(attempts - 1, 10), HOP_DOWN_RETRY_MAX_SECONDS)
    # The last try happens right at the give-up time, never after it.
    return Outcome(DEFERRED, next_attempt=min(now + delay, give_up_at), reason=reply)


def warn_at(policy: RetryPolicy, env: Envelope) -> float:
    return env.arrival + policy.warn_after_seconds


def retry_until(policy: RetryPolicy, env: Envelope) -> float:
    return env.arrival + policy.give_up_after_seconds


@dataclass
class Due:
    """Work a message has now."""

    recipients: list[int] = field(default_factory=list)  # indices to attempt
    delayed_notice: list[int] = field(default_factory=list)  # non-final recipients to warn about
    failure_notice: list[int] = field(default_factory=list)  # bounced recipients not yet reported

    def __bool__(self) -> bool:
        return bool(self.recipients or self.delayed_notice or self.failure_notice)


def _open(msg: Message) -> list[int]:
    return [i for i, r in enumerate(msg.rcpts) if r.state in (PENDING, DEFERRED)]


def _unreported(msg: Message) -> list[int]:
    return [i for i, r in enumerate(msg.rcpts) if r.state == BOUNCED and not r.notified]


def _delayed_owed(policy: RetryPolicy, msg: Message) -> bool:
    return owes_notices(msg.env.sender, msg.env.unverified) and not msg.delayed_notified and bool(_open(msg))


def due_now(policy: RetryPolicy, msg: Message, now: float) -> Due:
    """Recipients to attempt and notices to send at ``now``.

    Notices wait while a delivery of the same message is in flight, so that one
    notice reports every recipient that failed in the same round."""
    due = Due()
    due.recipients = [i for i in _open(msg) if not msg.rcpts[i].busy and msg.rcpts[i].next_attempt <= now]
    if due.recipients or msg.busy or msg.notice_retry_at > now:
        return due  # attempts first; the notices then report their outcome
    due.failure_notice = _unreported(msg)
    if _delayed_owed(policy, msg) and now >= warn_at(policy, msg.env):
        due.delayed_notice = _open(msg)
    return due


def next_due(policy: RetryPolicy, msg: Message) -> float | None:
    """The earliest time this message has something to do (None: nothing, or
    everything it has is in flight and will reschedule when done)."""
    times = [r.next_attempt for r in msg.rcpts if r.state in (PENDING, DEFERRED) and not r.busy]
    if not msg.busy:
        if _unreported(msg):
            times.append(msg.notice_retry_at)
        if _delayed_owed(policy, msg):
            times.append(max(warn_at(policy, msg.env), msg.notice_retry_at))
    return min(times) if times else None


def is_delayed(policy: RetryPolicy, msg: Message, index: int, now: float) -> bool:
    """Deferred past ``warnAfterSeconds`` (what ``/status`` lists as delayed)."""
    r = msg.rcpts[index]
    return r.state == DEFERRED and now - msg.env.arrival >= policy.warn_after_seconds


__all__ = ["policy_for", "reply_class", "after_attempt", "due_now", "next_due", "Due", "Outcome",
           "warn_at", "retry_until", "is_delayed", "human_duration"]
