"""SPF results for the whole relay process, kept while the DNS answers they
were worked out from are kept.

Many senders open one connection per message (bulk senders do, and so does
Postfix's ``smtp-source``): the SPF check of the next connection from the
same client, for the same sender domain and HELO name, would evaluate the
same records over the same answers again.  :class:`SpfCache` (one per relay,
held by :class:`~.session.MailAuth`, below the per-connection results of
:class:`~.session.ConnectionAuth`) keeps each result with the answers it
was worked out from (the ``(name, type)`` keys pyspf consulted, :mod:`.spf`)
and gives it back only while the process-wide answer cache
(:class:`~.dnscache.AnswerCache`) still holds each of those very answers:

* a result never outlives the shortest TTL among its answers (nor
  :data:`MAX_AGE`); when one of them expires or is replaced, the check is
  evaluated again, over the new answer;
* ``temperror`` is never kept (nor are the answers behind it);
* a result that took no DNS at all (a HELO name that is not a domain, a
  MAIL FROM without one) depends on the names alone: kept for
  :data:`MAX_AGE`;
* the key is the client's IP address, the MAIL FROM domain (the null
  sender: none), the HELO name and our receiver name, all of which the
  evaluation may read; a record that uses macros (``%{l}``, ``%{s}``, ...)
  can depend on the local part too, so such a result is given back for the
  same whole MAIL FROM address only; one that reads the time (``%{t}``) is
  not kept;
* at most ``max_entries`` results, least recently used dropped first.

A result for another sender at the same domain is the same verdict with
that sender as its subject.
"""
from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Mapping

from .dnsanswers import Answer
from .dnscache import AnswerCache
from .spf import SpfResult

DEFAULT_MAX_ENTRIES = 10000
MAX_AGE = 3600.0  # seconds; the answers' TTLs usually end it sooner

Key = tuple[str, str, str, str]


@dataclasses.dataclass(frozen=True)
class _Entry:
    result: SpfResult
    answers: tuple[tuple[tuple[str, str], Answer], ...]  # what it was worked out from
    sender: str | None  # the whole MAIL FROM it holds for (macros), None: any at the domain
    expires: float


def _key(ip: str, sender: str, helo: str, receiver: str) -> Key:
    # "@domain" for a MAIL FROM with a domain; anything else (the null
    # sender, an address without a domain) as it is, never one of those.
    at = sender.rfind("@")
    return ip, ("@" + sender[at + 1:].lower()) if at >= 0 else sender, helo, receiver


def _macros(answers: list[Answer]) -> tuple[bool, bool]:
    """(the records use macros, one reads the time)."""
    macros = clock = False
    for answer in answers:
        for parts in answer.records if answer.ok else ():
            if isinstance(parts, tuple):
                text = b"".join(p if isinstance(p, bytes) else str(p).encode() for p in parts)
                if b"%{" in text:
                    macros = True
                    lowered = text.lower()
                    clock = clock or b"%{t" in lowered
    return macros, clock


class SpfCache:
    """See the module docstring."""

    def __init__(self, answers: AnswerCache, *, max_entries: int = DEFAULT_MAX_ENTRIES,
                 max_age: float = MAX_AGE) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}")
        self.dns = answers
        self.max_entries = max_entries
        self.max_age = max_age
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, ip: str, sender: str, helo: str, receiver: str) -> SpfResult | None:
        """The kept result for this check, or None (evaluate it)."""
        k = _key(ip, sender, helo, receiver)
        entry = self._entries.get(k)
        if entry is None:
            return None
        if (entry.expires <= self.dns.clock()
                or not all(self.dns.holds(name_type, answer) for name_type, answer in entry.answers)):
            del self._entries[k]
            return None
        if entry.sender is not None and entry.sender != sender:
            return None
        self._entries.move_to_end(k)
        self.hits += 1
        result = entry.result
        if result.identity == "mailfrom" and result.subject != sender:
            result = dataclasses.replace(result, subject=sender)
        return result

    def put(self, ip: str, sender: str, helo: str, receiver: str, result: SpfResult,
            used: set[tuple[str, str]], answers: Mapping[tuple[str, str], Answer]) -> None:
        """Keep ``result``, worked out from the answers of the keys in
        ``used`` (as ``answers``, the connection's, has them)."""
        if result.result == "temperror":
            return
        deps = []
        for name_type in used:
            answer = answers.get(name_type)
            if answer is None or not self.dns.holds(name_type, answer):
                return  # not kept there (TTL 0, failure) or replaced since: nothing to hold on to
            deps.append((name_type, answer))
        macros, clock = _macros([a for _, a in deps])
        if clock:
            return
        k = _key(ip, sender, helo, receiver)
        self._entries[k] = _Entry(result, tuple(deps), sender if macros else None, self.dns.clock() + self.max_age)
        self._entries.move_to_end(k)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
