"""What the relay's listeners share: one object built by :mod:`.service` and
handed to every :class:`~.smtp.RelaySMTP` session.

It holds the configuration, the reloading directory, the limits that span
connections (connection gate, login throttle, rate limiter), the queue
client, the DKIM signer, the port-25 defences (:mod:`correo_server.defences`;
None when none are configured), the recipient checks and refusal counts of
:mod:`correo_server.backscatter`, the metrics and the figures ``/status`` reports.
Nothing here does I/O; tests can build one directly.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from ..backscatter.relay import Backscatter
from ..config import ServerConfig
from ..defences import Defences
from ..directory import Directory
from ..guard import ConnectionGate, LoginThrottle
from ..metrics import SESSION_BUCKETS, Registry
from ..tlsfiles import ServerTLS
from .dkim import DkimSigner
from .handoff import QueueClient
from .policy import RateLimiter


class DirectorySource(Protocol):
    def get(self) -> Directory: ...


# Metric names (the registry adds the ``correo_`` prefix).
CONNECTIONS = "relay_connections_total"
CONNECTIONS_OPEN = "relay_connections_open"
CONNECTIONS_REFUSED = "relay_connections_refused_total"
ACCEPTED = "relay_messages_accepted_total"
REJECTED = "relay_rejections_total"
AUTH = "relay_auth_total"
BYTES = "relay_received_bytes_total"
QUEUE_UP = "relay_queue_up"
HANDOFF_SECONDS = "relay_handoff_seconds_total"
SESSION_SECONDS = "relay_session_duration_seconds"
DEFENCE_VERDICTS = "relay_defence_verdicts_total"


def relay_metrics(registry: Registry) -> Registry:
    registry.counter(CONNECTIONS, "SMTP connections admitted, by listener", labels=("listener",))
    registry.gauge(CONNECTIONS_OPEN, "SMTP connections open now", labels=())
    registry.counter(CONNECTIONS_REFUSED, "SMTP connections refused by the connection limits, by reason",
                     labels=("reason",))
    registry.counter(ACCEPTED, "Messages accepted (the queue answered 250), by listener", labels=("listener",))
    registry.counter(REJECTED, "Commands or messages refused, by reason", labels=("reason",))
    registry.counter(AUTH, "SMTP AUTH attempts, by result (ok, failed, suspended)", labels=("result",))
    registry.counter(BYTES, "Message octets received in DATA, by listener", labels=("listener",))
    registry.gauge(QUEUE_UP, "1 when the queue answered the last check", labels=())
    registry.counter(HANDOFF_SECONDS, "Seconds spent handing messages to the queue", labels=())
    registry.histogram(SESSION_SECONDS, "SMTP sessions from connect to close, in seconds, by listener",
                       labels=("listener",), buckets=SESSION_BUCKETS)
    registry.counter(DEFENCE_VERDICTS, "Port-25 defence verdicts, by check (spf, spf_helo, dkim, dmarc, rspamd) "
                     "and result")
    return registry


@dataclass
class RelayContext:
    config: ServerConfig
    directory: DirectorySource
    queue: QueueClient  # or a relay.queuepool.QueuePool (same interface) over several replicas
    tls: ServerTLS | None = None
    clock: Callable[[], float] = time.time
    metrics: Registry = field(default_factory=lambda: relay_metrics(Registry()))
    throttle: LoginThrottle | None = None
    gate: ConnectionGate | None = None
    limiter: RateLimiter | None = None
    signer: DkimSigner | None = None
    defences: Defences | None = None
    backscatter: Backscatter | None = None
    accepted: int = 0
    rejected: int = 0
    queue_ready: bool = False
    sessions: set[Any] = field(default_factory=set)
    inflight_bytes: int = 0  # messages read into memory for their checks and hand-off (max_inflight_bytes)

    def __post_init__(self) -> None:
        relay = self.config.relay
        if self.throttle is None:
            self.throttle = LoginThrottle.from_settings(self.config.auth, clock=self.clock)
        if self.gate is None:
            self.gate = ConnectionGate(relay.max_connections, relay.max_connections_per_client)
        if self.limiter is None:
            self.limiter = RateLimiter(relay.rate_limit_messages, relay.rate_limit_period_seconds, clock=self.clock)
        if self.signer is None:
            self.signer = DkimSigner(self.config)

    def count_rejection(self, reason: str | None) -> None:
        self.rejected += 1
        self.metrics.inc(REJECTED, reason=reason or "other")

    def count_verdicts(self, verdicts: list[tuple[str, str]]) -> None:
        for check, result in verdicts:
            self.metrics.inc(DEFENCE_VERDICTS, check=check, result=result)

    def count_accepted(self, listener: str, size: int) -> None:
        self.accepted += 1
        self.metrics.inc(ACCEPTED, listener=listener)
