"""The queue's view of receivers' MTA-STS policies: find, fetch, cache.

:meth:`Policies.policy_for` answers "which policy applies to mail for this
domain now?" the way RFC 8461 section 5.1 says:

1. look up the ``_mta-sts.<domain>`` TXT record through the queue's resolver
   (the one the MX lookups use: ``queue.nameservers``);
2. decide with :func:`.decide.next_step` whether the cached policy (memory,
   then the spool volume: :mod:`.cache`) is current, a new one must be
   fetched (:mod:`.fetch`), or there is none;
3. a fetched policy that parses replaces the cached one; when fetching fails
   the cached policy stays in force until its max_age, and without one mail
   goes out as if the domain had no policy.  A failed fetch is not tried again
   for the same announced id for five minutes, so a broken policy host costs
   one attempt, not one per message.

Nothing here raises into the delivery code: every problem is logged and
answered with "the cached policy" or "no policy".  :meth:`Policies.rule`
turns the applied policy into the :class:`.decide.HostRule` for one MX host.
Times come from an injected clock (the queue's), so that tests move through
``max_age`` without waiting.
"""
from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path
from typing import Awaitable, Callable

import dns.asyncresolver
import dns.exception
import dns.resolver

from .. import logs
from ..config import ServerConfig
from .cache import PolicyCache
from .decide import FETCH, NO_POLICY, Applied, HostRule, next_step, rule_for
from .fetch import FetchError, fetch_policy
from .policy import PolicyError, parse, parse_txt

log = logs.get(__name__)

RETRY_FETCH_SECONDS = 300.0

Fetcher = Callable[..., Awaitable[str]]


def verifying_context(ca_file: str | None) -> ssl.SSLContext:
    """Chain and host name checked: against ``ca_file`` when given, else the system's CAs."""
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"queue.mtaSts.caFile {ca_file}: cannot be read as PEM certificates: {exc}") from None


class Policies:
    def __init__(self, cache_dir: Path, *, ca_file: str | None = None, https_port: int = 443,
                 timeout: float = 30.0, now: Callable[[], float] = time.time, fetch: Fetcher = fetch_policy) -> None:
        self.cache = PolicyCache(cache_dir)
        self.context = verifying_context(ca_file)
        self.https_port = https_port
        self.timeout = timeout
        self.now = now
        self._fetch = fetch
        self._memory: dict[str, Applied | None] = {}  # None: the disk has nothing either
        self._locks: dict[str, asyncio.Lock] = {}
        self._failed: dict[tuple[str, str], float] = {}  # (domain, announced id) → not before

    @classmethod
    def from_config(cls, cfg: ServerConfig, now: Callable[[], float] = time.time) -> "Policies | None":
        """None when ``queue.mtaSts.enabled`` is false.  Raises ValueError for an unreadable CA file."""
        m = cfg.queue.mta_sts
        if not m.enabled:
            return None
        cache_dir = Path(m.cache_dir)
        if not cache_dir.is_absolute():
            cache_dir = cfg.path(cfg.queue.spool_dir) / cache_dir
        ca_file = str(cfg.path(m.ca_file)) if m.ca_file else None
        return cls(cache_dir, ca_file=ca_file, https_port=m.https_port, timeout=float(m.fetch_timeout_seconds),
                   now=now)

    def _cached(self, domain: str) -> Applied | None:
        if domain not in self._memory:
            self._memory[domain] = self.cache.load(domain)
        return self._memory[domain]

    async def _announced(self, domain: str, resolver: dns.asyncresolver.Resolver) -> str | None:
        name = f"_mta-sts.{domain}"
        try:
            answer = await resolver.resolve(name, "TXT", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except dns.exception.DNSException as exc:
            log.info("mta_sts_txt_lookup_failed", domain=domain, error=str(exc) or type(exc).__name__)
            return None
        strings = [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
        try:
            return parse_txt(strings)
        except PolicyError as exc:
            log.warning("mta_sts_txt_invalid", domain=domain, record=name, error=str(exc))
            return None

    async def policy_for(self, domain: str, resolver: dns.asyncresolver.Resolver) -> Applied | None:
        """The policy that applies to mail for ``domain`` now, or None."""
        domain = domain.lower().rstrip(".")
        lock = self._locks.setdefault(domain, asyncio.Lock())
        async with lock:  # one lookup and fetch per domain at a time; the others use its result
            cached = self._cached(domain)
            announced = await self._announced(domain, resolver)
            now = self.now()
            action, why = next_step(cached, announced, now)
            if action != FETCH:
                return cached if action != NO_POLICY else None
            assert announced is not None
            fallback = cached if cached is not None and cached.fresh(now) else None
            if self._failed.get((domain, announced), 0.0) > now:
                return fallback
            try:
                text = await self._fetch(domain, resolver=resolver, context=self.context, port=self.https_port,
                                         timeout=self.timeout)
                policy = parse(text)
            except (FetchError, PolicyError) as exc:
                self._failed[(domain, announced)] = now + RETRY_FETCH_SECONDS
                log.warning("mta_sts_fetch_failed", domain=domain, policy_id=announced, error=str(exc),
                            using=f"cached policy {fallback.id}" if fallback else "no policy (RFC 8461 3.3)")
                return fallback
            applied = Applied(domain=domain, policy=policy, id=announced, fetched_at=self.now())
            self._memory[domain] = applied
            self._failed.pop((domain, announced), None)
            await asyncio.to_thread(self.cache.store, applied, text)
            log.info("mta_sts_policy_fetched", domain=domain, policy_id=announced, mode=policy.mode,
                     max_age=policy.max_age, mx=list(policy.mx), why=why)
            return applied

    def rule(self, applied: Applied | None, host: str) -> HostRule | None:
        """What the policy asks of one MX host (None: no policy applies)."""
        rule = rule_for(applied, host, self.context)
        if rule is not None and not rule.allowed and not rule.enforce:
            rule.unmet(f"the host is not among the policy's MX patterns ({', '.join(rule.applied.policy.mx)})")
        return rule
