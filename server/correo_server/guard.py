"""Limits every listener shares: connections per client, failed-login delays,
and whether a login without TLS is allowed.

These are decisions, kept free of I/O: a server asks, then acts.  The clock is
injected so that tests never sleep.
"""
from __future__ import annotations

import ipaddress
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

from .config import AuthSettings

# Octets of one line, and of one literal, that a client may send before it
# has logged in (IMAP, POP3, ManageSieve; SMTP AUTH answers are bound by the
# relay's line length).  Dovecot's login processes keep 4 KB of input: what
# LOGIN, AUTHENTICATE PLAIN, ID or CAPABILITY need, and no more, so that
# unauthenticated clients cannot make a server hold megabytes each.
PRELOGIN_INPUT_BYTES = 4096


def is_loopback(peer: str | None) -> bool:
    if not peer:
        return False
    try:
        addr = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def plaintext_login_allowed(settings: AuthSettings, peer: str | None, tls_active: bool) -> bool:
    """May this client log in (LOGIN, USER/PASS, AUTH) on this connection?"""
    if tls_active:
        return True
    if settings.plaintext == "always":
        return True
    if settings.plaintext == "loopback":
        return is_loopback(peer)
    return False


class ConnectionGate:
    """Counts open connections, in total and per client address."""

    def __init__(self, max_total: int, max_per_client: int) -> None:
        self.max_total = max_total
        self.max_per_client = max_per_client
        self.total = 0
        self.per_client: dict[str, int] = defaultdict(int)

    def admit(self, peer: str) -> str | None:
        """Take a slot for ``peer``; None when admitted, else why not."""
        if self.total >= self.max_total:
            return "too many connections"
        if self.per_client[peer] >= self.max_per_client:
            return "too many connections from your address"
        self.total += 1
        self.per_client[peer] += 1
        return None

    def release(self, peer: str) -> None:
        self.total = max(0, self.total - 1)
        n = self.per_client.get(peer, 0) - 1
        if n > 0:
            self.per_client[peer] = n
        else:
            self.per_client.pop(peer, None)


class InflightBudget:
    """Octets of client data a service holds in memory at once, over all
    sessions (literals being read, messages being handed on).  A session
    takes what it is about to read (:meth:`take`, False when that would pass
    the budget: the client is told to try again later) and gives it back
    when done with it (:meth:`give`).  0: no budget."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, n: int) -> bool:
        if self.limit and self.held and self.held + n > self.limit:
            return False  # a single request larger than the budget still runs alone
        self.held += n
        return True

    def give(self, n: int) -> None:
        self.held = max(0, self.held - n)


@dataclass
class LoginThrottle:
    """A failed login costs a delay that doubles with each consecutive failure
    from the same client address, up to a short maximum (2 s, Dovecot's
    ``auth_failure_delay``: a user fixing a typo must not see the client
    hang); a success clears it.  From the ``hint_after``-th consecutive
    failure on, :meth:`retry_after` is what the failure reply asks the
    client to wait.  Entries older than ``forget_after`` seconds are
    forgotten."""

    base: float = 1.0
    maximum: float = 2.0
    forget_after: float = 900.0
    hint_after: int = 3
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, tuple[int, float]] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: AuthSettings, clock: Callable[[], float] = time.monotonic) -> "LoginThrottle":
        return cls(base=settings.failure_delay_seconds, maximum=settings.failure_delay_max_seconds, clock=clock)

    def failed(self, peer: str) -> float:
        """Record a failure; returns the seconds to wait before answering."""
        now = self.clock()
        count, last = self._failures.get(peer, (0, now))
        if now - last > self.forget_after:
            count = 0
        count += 1
        self._failures[peer] = (count, now)
        if len(self._failures) > 10000:  # bound memory under a spray of addresses
            oldest = sorted(self._failures.items(), key=lambda kv: kv[1][1])[:5000]
            for key, _ in oldest:
                self._failures.pop(key, None)
        return min(self.base * (2 ** (count - 1)), self.maximum) if self.base > 0 else 0.0

    def retry_after(self, peer: str) -> float:
        """Seconds a client should wait before its next attempt, which the
        failure reply says (0 until failures repeat)."""
        count = self.failures(peer)
        if count < self.hint_after or self.base <= 0:
            return 0.0
        return min(self.base * (2 ** count), self.maximum)

    def succeeded(self, peer: str) -> None:
        self._failures.pop(peer, None)

    def failures(self, peer: str) -> int:
        return self._failures.get(peer, (0, 0))[0]
