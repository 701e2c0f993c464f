"""What the queue publishes: the ``/status`` document and Prometheus figures.

``/status`` is exactly :class:`~correo_server.statusdoc.QueueStatus`: live
figures (active, deferred, oldest deferred age, the delayed list) are counted
from the messages in the queue at the time of the request; cumulative ones
(delivered, bounced, delayed notices sent, last errors, last bounces, per
sender last bounce and last delivery) come from :class:`.records.Figures`,
which the journal keeps across restarts.  Figures per domain count a message
for the hosted domain it belongs to (:func:`.ownership.owner_of`, the owner
whose retry policy it follows), so every queued message is counted under
some domain; figures per sender count hosted sending mailboxes.  The
queue's own notices count in the live figures and in ``lastErrors`` (a notice
that cannot be delivered is worth seeing) but not as delivered or bounced
mail.
"""
from __future__ import annotations

from ..config import ServerConfig
from ..metrics import Registry
from ..statusdoc import Delayed, QueueFigures, QueueStatus, SenderFigures, empty_figures, rfc3339
from . import schedule
from .clock import Clock
from .ownership import owner_of
from .records import DEFERRED, PENDING, QueueState, SenderTally, Tally

MAX_DELAYED = 50


def _figures(tally: Tally | None) -> QueueFigures:
    f = empty_figures()
    if tally is not None:
        f["delivered"] = tally.delivered
        f["bounced"] = tally.bounced
        f["delayedNoticesSent"] = tally.delayed_notices
        f["lastErrors"] = list(reversed(tally.last_errors.values()))
        f["lastBounces"] = list(tally.last_bounces)
    return f


def _sender(tally: SenderTally | None) -> SenderFigures:
    t = tally or SenderTally()
    return SenderFigures(deferred=0, bounced=t.bounced, delayedNoticesSent=t.delayed_notices,
                         delivered=t.delivered, lastBounce=t.last_bounce,
                         lastDelivery=rfc3339(t.last_delivery) if t.last_delivery else None)


def build(cfg: ServerConfig, state: QueueState, now: float, *, ready: bool) -> QueueStatus:
    figures = state.figures
    totals = _figures(figures.total)
    domains = {d.name: _figures(figures.domains.get(d.name)) for d in cfg.domains}
    for name, tally in figures.domains.items():
        domains.setdefault(name, _figures(tally))
    senders = {name: _sender(t) for name, t in figures.senders.items()}
    for msg in state:
        env = msg.env
        owner = owner_of(cfg, env)
        policy = schedule.policy_for(cfg, env)  # the same owner's
        scopes = [totals]
        if owner is not None:
            scopes.append(domains.setdefault(owner.name, empty_figures()))
        for i, r in enumerate(msg.rcpts):
            if r.final:
                continue
            for f in scopes:
                f["active"] += 1
            if r.state != DEFERRED:
                continue
            age = max(int(now - env.arrival), 0)
            for f in scopes:
                f["deferred"] += 1
                f["oldestDeferredAgeSeconds"] = max(f["oldestDeferredAgeSeconds"], age)
            if env.sender_mailbox:
                senders.setdefault(env.sender_mailbox, _sender(None))["deferred"] += 1
            if schedule.is_delayed(policy, msg, i, now):
                item = Delayed(queueId=env.id, sender=env.sender, recipient=r.rcpt.address,
                               destination=r.destination, lastError=r.reply, since=rfc3339(env.arrival),
                               ageSeconds=age)
                for f in scopes:
                    f["delayed"].append(item)
    for f in [totals, *domains.values()]:
        f["delayed"].sort(key=lambda d: -d["ageSeconds"])
        del f["delayed"][MAX_DELAYED:]
    return QueueStatus(service="queue", ready=ready, time=rfc3339(now), totals=totals, domains=domains,
                       senders=senders)


def register_metrics(metrics: Registry, state: QueueState, clock: Clock, cfg: ServerConfig | None = None) -> None:
    def depth():
        counts = {PENDING: 0, DEFERRED: 0}
        for msg in state:
            for r in msg.rcpts:
                if r.state in counts:
                    counts[r.state] += 1
        return [({"state": k}, v) for k, v in counts.items()]

    def oldest():
        now = clock.now()
        ages = [now - m.env.arrival for m in state]
        return [({}, max(ages, default=0.0))]

    def oldest_deferred():
        """Per hosted domain (the owner whose retry policy applies, as in /status)."""
        now = clock.now()
        ages = {d.name: 0.0 for d in cfg.domains}
        for msg in state:
            if any(not r.final and r.state == DEFERRED for r in msg.rcpts):
                owner = owner_of(cfg, msg.env)
                if owner is not None:
                    ages[owner.name] = max(ages.get(owner.name, 0.0), now - msg.env.arrival)
        return [({"domain": d}, age) for d, age in sorted(ages.items())]

    metrics.gauge_fn("queue_recipients", "Recipients in the queue by state (pending, deferred)", depth)
    metrics.gauge_fn("queue_messages", "Messages in the queue", lambda: [({}, len(state))])
    metrics.gauge_fn("queue_oldest_message_age_seconds", "Age of the oldest message in the queue", oldest)
    if cfg is not None:
        metrics.gauge_fn("queue_oldest_deferred_age_seconds",
                         "Age of the oldest message with a deferred recipient, by hosted domain", oldest_deferred)
        metrics.gauge_fn("queue_warn_after_seconds",
                         "The domain's warnAfterSeconds: a recipient deferred this long gets the sender a "
                         "delayed notice", lambda: [({"domain": d.name}, d.retry.warn_after_seconds)
                                                    for d in cfg.domains])
    metrics.counter_fn("queue_delivered_recipients_total", "Recipients delivered (kept across restarts)",
                       lambda: [({}, state.figures.total.delivered)])
    metrics.counter_fn("queue_bounced_recipients_total", "Recipients bounced (kept across restarts)",
                       lambda: [({}, state.figures.total.bounced)])
    metrics.counter_fn("queue_delayed_notices_total", "Delayed notices sent (kept across restarts)",
                       lambda: [({}, state.figures.total.delayed_notices)])
    metrics.counter("queue_attempts_total", "Delivery attempts by destination and result",
                    labels=("destination", "result"))
    metrics.counter("queue_notices_total", "Delivery status notifications queued, by kind", labels=("kind",))
    metrics.counter("queue_notices_suppressed_total", "Failure notices not sent because the sender failed SPF or "
                    "DMARC (no backscatter), by reason", labels=("reason",))
    metrics.counter("queue_enqueued_total", "Messages accepted into the queue", labels=())
    metrics.counter("queue_rejected_total", "Messages or recipients refused at the LMTP door, by reason",
                    labels=("reason",))
    metrics.counter("queue_finished_total", "Messages removed from the queue after every recipient was final",
                    labels=())
    metrics.histogram("queue_delivery_duration_seconds",
                      "Seconds per delivery of one message to one next hop, by route (mailstore, mx, smarthost)",
                      labels=("route",))
