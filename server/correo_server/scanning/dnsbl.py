"""DNS blocklists and allowlists (RFC 5782) for the connecting client.

Each configured zone has an action:

* ``reject``: a listed client is refused at RCPT with ``554 5.7.1`` and the
  zone's TXT text (as Postfix's ``reject_rbl_client`` says it);
* ``score``: a listing adds the zone's ``weight``; when the sum reaches
  ``threshold`` (0: never) the client is refused the same way;
* ``allow`` (a DNSWL): a listed client is never refused by a blocklist.

The lookups start when the client connects (:meth:`Dnsbl.check` in a task
the relay starts at connect) and the verdict is awaited at RCPT, so that the
round trips overlap the greeting and EHLO, and a refusal names the sender
and recipient in the logs.  An answer counts as a listing when it is in
``returnCodes`` (addresses or networks), by default any 127.0.0.0/8 address
except 127.255.255.0/24, which Spamhaus and others use to say "your query
was refused", not "listed".

A blocklist that cannot be asked (DNS failure, timeout) is not a listing:
mail keeps flowing when a blocklist is down, as with every MTA; the failure
is logged and reported in the verdict.  Verdicts are cached per client
address for ``cacheSeconds``; the answers are asked through the relay's
:class:`~.mailauth.dnscache.AnswerCache`, which keeps them for their TTL.
"""
from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import dataclass
from typing import Callable

import dns.asyncresolver

from .. import logs
from ..mailauth import dnsanswers
from ..mailauth.dnscache import AnswerCache
from ..replytext import printable
from ..wire.replies import Reply

log = logs.get(__name__)

ACTIONS = ("reject", "score", "allow")
_ERROR_CODES = ipaddress.ip_network("127.255.255.0/24")
_LOOPBACK_NET = ipaddress.ip_network("127.0.0.0/8")


@dataclass(frozen=True)
class DnsblZone:
    zone: str
    action: str = "reject"
    weight: int = 1
    return_codes: tuple[str, ...] = ()  # "127.0.0.2", "127.0.0.0/29"; empty: see the module docstring
    message: str = ""  # the refusal text; empty: the zone's TXT record

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"{self.zone}: action must be reject, score or allow, not {self.action!r}")
        for code in self.return_codes:
            ipaddress.ip_network(code, strict=False)  # raises ValueError for nonsense

    def counts(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if self.return_codes:
            return any(ip in ipaddress.ip_network(code, strict=False) for code in self.return_codes)
        return ip.version == 4 and ip in _LOOPBACK_NET and ip not in _ERROR_CODES


@dataclass(frozen=True)
class DnsblSettings:
    zones: tuple[DnsblZone, ...] = ()
    threshold: int = 0  # refuse when the "score" zones' weights add up to this (0: never)
    cache_seconds: int = 300


@dataclass(frozen=True)
class Listing:
    zone: str
    action: str
    codes: tuple[str, ...]
    text: str = ""


@dataclass(frozen=True)
class DnsblVerdict:
    ip: str
    listings: tuple[Listing, ...] = ()
    score: int = 0
    allowed: bool = False  # listed in an allowlist
    errors: tuple[str, ...] = ()
    reply: Reply | None = None  # the refusal at RCPT; None: go on


def query_name(ip: str, zone: str) -> str:
    """RFC 5782 section 2.1 (IPv4, octets reversed) and 2.4 (IPv6, nibbles)."""
    address = ipaddress.ip_address(ip)
    if address.version == 4:
        return ".".join(reversed(address.exploded.split("."))) + "." + zone.rstrip(".")
    nibbles = address.exploded.replace(":", "")
    return ".".join(reversed(nibbles)) + "." + zone.rstrip(".")


def decide(ip: str, settings: DnsblSettings, found: dict[str, tuple[dnsanswers.Answer, dnsanswers.Answer | None]]
           ) -> DnsblVerdict:
    """The verdict from each zone's A answer (and TXT answer, when listed). Pure."""
    listings: list[Listing] = []
    errors: list[str] = []
    score = 0
    allowed = False
    for zone in settings.zones:
        a_answer, txt_answer = found.get(zone.zone, (None, None))
        if a_answer is None:
            continue
        if a_answer.temporary:
            errors.append(f"{zone.zone}: {a_answer.error or 'DNS failure'}")
            continue
        codes = tuple(a for a in a_answer.records if zone.counts(a)) if a_answer.ok else ()
        if not codes:
            continue
        text = ""
        if txt_answer is not None and txt_answer.ok:
            text = " ".join(t.decode("utf-8", "replace") for t in txt_answer.texts())
        listings.append(Listing(zone.zone, zone.action, codes, text))
        if zone.action == "allow":
            allowed = True
        elif zone.action == "score":
            score += zone.weight
    reply = None
    if not allowed:
        zones = {z.zone: z for z in settings.zones}
        blocking = [entry for entry in listings if entry.action == "reject"]
        if not blocking and settings.threshold > 0 and score >= settings.threshold:
            blocking = [entry for entry in listings if entry.action == "score"]
        if blocking:
            first = blocking[0]
            text = zones[first.zone].message or first.text
            reply = Reply(554, "5.7.1", printable(
                f"Service unavailable; client host [{ip}] blocked using {first.zone}"
                + (f"; {text}" if text else "")), "dnsbl")
    return DnsblVerdict(ip, tuple(listings), score, allowed, tuple(errors), reply)


class Dnsbl:
    def __init__(self, resolver: AnswerCache | dns.asyncresolver.Resolver, settings: DnsblSettings, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cache = AnswerCache.of(resolver)  # the relay's, shared with the sender checks
        self.resolver = self.cache.resolver
        self.settings = settings
        self.clock = clock
        self._cache: dict[str, tuple[float, DnsblVerdict]] = {}

    async def _zone(self, ip: str, zone: DnsblZone) -> tuple[dnsanswers.Answer, dnsanswers.Answer | None]:
        name = query_name(ip, zone.zone)
        a_answer = await self.cache.lookup(name, "A")
        txt_answer = None
        if a_answer.ok and any(zone.counts(a) for a in a_answer.records) and zone.action != "allow":
            txt_answer = await self.cache.lookup(name, "TXT")
        return a_answer, txt_answer

    async def check(self, ip: str) -> DnsblVerdict:
        """The verdict for a client address (cached)."""
        if not self.settings.zones:
            return DnsblVerdict(ip)
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            return DnsblVerdict(ip, errors=(f"{ip!r} is not an IP address",))
        now = self.clock()
        cached = self._cache.get(ip)
        if cached is not None and cached[0] > now:
            return cached[1]
        answers = await asyncio.gather(*(self._zone(ip, z) for z in self.settings.zones))
        verdict = decide(ip, self.settings, {z.zone: a for z, a in zip(self.settings.zones, answers)})
        if len(self._cache) > 50000:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
        self._cache[ip] = (now + self.settings.cache_seconds, verdict)
        if verdict.listings or verdict.errors:
            log.info("dnsbl", ip=ip, listed=[f"{entry.zone}={','.join(entry.codes)}" for entry in verdict.listings],
                     score=verdict.score, allowed=verdict.allowed, errors=list(verdict.errors),
                     refused=str(verdict.reply) if verdict.reply else None)
        return verdict
