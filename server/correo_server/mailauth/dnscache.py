"""The relay process's DNS answer cache, shared by every connection.

SPF, DKIM, DMARC (through each connection's :class:`~.dnsanswers.DnsView`)
and the DNS blocklists (:mod:`correo_server.scanning.dnsbl`) ask DNS through
one :class:`AnswerCache`, built once per relay by
:class:`correo_server.defences.Defences`.  Many senders open one connection
per message (Postfix's ``smtp-source`` does, so do bulk senders), so what one
connection learnt about a sender's domain is what the next one needs.

* An answer is kept for its TTL (the smallest TTL of the answer and the
  CNAMEs that led to it), at most :data:`MAX_TTL`; a TTL of 0 is not kept.
* ``nxdomain`` and ``nodata`` are kept as RFC 2308 says: for the smaller of
  the SOA record's TTL and its MINIMUM field from the authority section, at
  most :data:`MAX_NEGATIVE_TTL`; a negative answer without an SOA record for
  :data:`NEGATIVE_TTL_WITHOUT_SOA` only.
* ``temperror`` (server failure, timeout) is never kept: the next
  connection asks again.
* At most ``max_entries`` answers, least recently used dropped first.
* Concurrent askers of the same ``(name, type)`` share one query; a cancelled
  asker (its client hung up) does not cancel it for the others.

The cache replaces the resolver's own (dnspython's ``LRUCache``, which runs
on the wall clock): the resolver given here has its cache switched off, so
that what is kept, and for how long, is decided here, on an injectable clock.
A cache hit is a dict lookup (about 1 µs against ~30 µs through the
resolver's cache).
"""
from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Callable, Union

import dns.asyncresolver

from . import dnsanswers
from .dnsanswers import MAX_NEGATIVE_TTL, MAX_TTL, NEGATIVE_TTL_WITHOUT_SOA, Answer

__all__ = ["AnswerCache", "MAX_NEGATIVE_TTL", "MAX_TTL", "NEGATIVE_TTL_WITHOUT_SOA"]

DEFAULT_MAX_ENTRIES = 10000


class AnswerCache:
    """DNS answers for the whole relay process (see the module docstring)."""

    def __init__(self, resolver: dns.asyncresolver.Resolver, *, max_entries: int = DEFAULT_MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}")
        resolver.cache = None  # kept here instead (see the module docstring)
        self.resolver = resolver
        self.max_entries = max_entries
        self.clock = clock
        self._answers: OrderedDict[tuple[str, str], tuple[float, Answer]] = OrderedDict()
        self._pending: dict[tuple[str, str], asyncio.Future[tuple[Answer, float]]] = {}
        self.hits = 0
        self.queries = 0  # questions sent to DNS

    @classmethod
    def of(cls, source: "AnswerCache | dns.asyncresolver.Resolver") -> "AnswerCache":
        """``source`` itself when it is a cache, else a new cache over the resolver."""
        return source if isinstance(source, AnswerCache) else cls(source)

    def __len__(self) -> int:
        return len(self._answers)

    def cached(self, name: str, rdtype: str) -> Answer | None:
        """The kept answer, if it has not expired (no DNS)."""
        k = dnsanswers.key(name, rdtype)
        entry = self._answers.get(k)
        if entry is None:
            return None
        if entry[0] <= self.clock():
            del self._answers[k]
            return None
        self._answers.move_to_end(k)
        return entry[1]

    def holds(self, k: tuple[str, str], answer: Answer) -> bool:
        """Is ``answer`` (for the normalised key ``k``) still the one kept,
        unexpired?  What :mod:`.spfcache` checks its results against."""
        entry = self._answers.get(k)
        return entry is not None and entry[1] is answer and entry[0] > self.clock()

    async def lookup(self, name: str, rdtype: str) -> Answer:
        """The answer for ``(name, rdtype)``, from the cache or from DNS; never raises."""
        k = dnsanswers.key(name, rdtype)
        known = self.cached(*k)
        if known is not None:
            self.hits += 1
            return known
        pending = self._pending.get(k)
        if pending is None:
            self.queries += 1
            pending = asyncio.ensure_future(dnsanswers.fetch_ttl(self.resolver, k[0], k[1]))
            self._pending[k] = pending
            pending.add_done_callback(lambda done, k=k: self._done(k, done))
        answer, _ttl = await asyncio.shield(pending)
        return answer

    def _done(self, k: tuple[str, str], done: asyncio.Future[tuple[Answer, float]]) -> None:
        if self._pending.get(k) is done:
            del self._pending[k]
        if done.cancelled() or done.exception() is not None:
            return
        answer, ttl = done.result()
        if ttl <= 0:
            return
        self._answers[k] = (self.clock() + ttl, answer)
        self._answers.move_to_end(k)
        while len(self._answers) > self.max_entries:
            self._answers.popitem(last=False)


CacheOrResolver = Union[AnswerCache, dns.asyncresolver.Resolver]
