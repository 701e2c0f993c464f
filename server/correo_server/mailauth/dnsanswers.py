"""DNS answers as data, and the per-connection cache that fetches them.

The checks in this package are pure functions over DNS answers
(:class:`Answer` values keyed by ``(name, type)``); this module is the only
place in :mod:`correo_server.mailauth` that talks to DNS.  A
:class:`DnsView` belongs to one SMTP connection: every answer it got stays
in it for the connection's life (so that the checks of one connection see
one consistent DNS, and the SPF check of a second transaction asks nothing
twice).  Below it, the process-wide :class:`~.dnscache.AnswerCache` keeps
answers for their TTL across connections and shares one query among
concurrent askers; :func:`fetch_ttl` says how long an answer may be kept.

A DNS failure is an answer too: ``temperror`` (server failure, refusal,
timeout), which the checks turn into ``temperror`` verdicts and ``4xx``
replies, never into a pass.  ``nxdomain`` and ``nodata`` are distinct
because the RFCs treat them alike for most checks but not all (a DNSBL
listing needs an address; a void lookup counts for SPF either way).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver

if TYPE_CHECKING:
    from .dnscache import AnswerCache

OK = "ok"
NXDOMAIN = "nxdomain"
NODATA = "nodata"
TEMPERROR = "temperror"

# How long answers may be kept (:func:`fetch_ttl`, :mod:`.dnscache`), in seconds.
MAX_TTL = 86400  # a day, as Unbound's cache-max-ttl
MAX_NEGATIVE_TTL = 3600  # RFC 2308 section 5 suggests one to three hours
NEGATIVE_TTL_WITHOUT_SOA = 60  # RFC 2308 section 5: "SHOULD NOT be cached"; a minute spares the server a flood


@dataclass(frozen=True)
class Answer:
    """What DNS said about one ``(name, type)``.

    ``records`` by type: ``A``/``AAAA`` address strings; ``TXT`` one tuple of
    byte strings per record (the character-strings, not yet joined); ``MX``
    ``(preference, exchange)`` pairs; ``PTR`` and ``CNAME`` target names
    (without the final dot)."""

    status: str
    records: tuple[Any, ...] = ()
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def temporary(self) -> bool:
        return self.status == TEMPERROR

    def texts(self) -> list[bytes]:
        """TXT records, each one's strings joined (RFC 7208 section 3.3)."""
        return [b"".join(parts) for parts in self.records]


Answers = Mapping[tuple[str, str], Answer]


def key(name: str, rdtype: str) -> tuple[str, str]:
    return name.rstrip(".").lower(), rdtype.upper()


def _records(rdtype: str, answer: dns.resolver.Answer) -> tuple[Any, ...]:
    out: list[Any] = []
    for rdata in answer:
        if rdtype in ("A", "AAAA"):
            out.append(rdata.address)
        elif rdtype in ("TXT", "SPF"):
            out.append(tuple(rdata.strings))
        elif rdtype == "MX":
            out.append((rdata.preference, rdata.exchange.to_text(omit_final_dot=True).lower()))
        elif rdtype in ("PTR", "CNAME"):
            out.append(rdata.target.to_text(omit_final_dot=True).lower())
        else:
            out.append(rdata.to_text())
    return tuple(out)


async def fetch(resolver: dns.asyncresolver.Resolver, name: str, rdtype: str) -> Answer:
    """Ask DNS once; every outcome is an :class:`Answer` (nothing raises)."""
    return (await fetch_ttl(resolver, name, rdtype))[0]


async def fetch_ttl(resolver: dns.asyncresolver.Resolver, name: str, rdtype: str) -> tuple[Answer, float]:
    """Ask DNS once: the :class:`Answer` and how long it may be kept, in
    seconds (0: not at all; the rules are :mod:`.dnscache`'s)."""
    try:
        answer = await resolver.resolve(name, rdtype, search=False, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN as exc:
        responses = list(exc.responses().values()) if exc.kwargs.get("responses") else []
        ttl = _negative_ttl(responses[-1] if responses else None, NEGATIVE_TTL_WITHOUT_SOA, MAX_NEGATIVE_TTL)
        return Answer(NXDOMAIN), ttl
    except dns.resolver.YXDOMAIN:
        return Answer(NXDOMAIN, error="name too long after DNAME substitution"), NEGATIVE_TTL_WITHOUT_SOA
    except (dns.name.NameTooLong, dns.name.LabelTooLong, dns.name.EmptyLabel) as exc:
        return Answer(NXDOMAIN, error=f"not a valid DNS name: {exc}"), MAX_NEGATIVE_TTL
    except dns.resolver.NoNameservers as exc:
        return Answer(TEMPERROR, error=f"DNS server failure for {name} ({rdtype}): {_short(exc)}"), 0
    except (dns.exception.Timeout, dns.resolver.LifetimeTimeout):
        return Answer(TEMPERROR, error=f"DNS timeout for {name} ({rdtype})"), 0
    except dns.exception.DNSException as exc:
        return Answer(TEMPERROR, error=f"DNS error for {name} ({rdtype}): {_short(exc)}"), 0
    if answer.rrset is None:
        return Answer(NODATA), _negative_ttl(answer.response, NEGATIVE_TTL_WITHOUT_SOA, MAX_NEGATIVE_TTL)
    ttl = min(answer.rrset.ttl, *(c.ttl for c in answer.chaining_result.cnames), MAX_TTL)
    return Answer(OK, _records(rdtype, answer)), ttl


def _negative_ttl(response: dns.message.Message | None, without_soa: float, cap: float) -> float:
    """RFC 2308 section 5: the smaller of the SOA record's TTL and its
    MINIMUM field (from the authority section), at most ``cap``;
    ``without_soa`` when the response carries no SOA record."""
    if response is not None:
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
                return min(rrset.ttl, rrset[0].minimum, cap)
    return without_soa


def _short(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:197] + "..."


class DnsView:
    """The DNS answers one connection has seen (see the module docstring)."""

    def __init__(self, source: "AnswerCache | dns.asyncresolver.Resolver") -> None:
        if isinstance(source, dns.asyncresolver.Resolver):  # tests and tools; the relay passes its cache
            from .dnscache import AnswerCache  # here: dnscache imports this module
            source = AnswerCache(source)
        self.cache = source
        self.resolver = self.cache.resolver
        self.answers: dict[tuple[str, str], Answer] = {}
        self.queries = 0  # answers this connection got from the shared cache (for logs and tests)

    async def lookup(self, name: str, rdtype: str) -> Answer:
        k = key(name, rdtype)
        known = self.answers.get(k)
        if known is not None:
            return known
        self.queries += 1
        answer = await self.cache.lookup(k[0], k[1])  # concurrent askers share one query there
        self.answers[k] = answer
        return answer

    async def lookup_all(self, wanted: list[tuple[str, str]]) -> dict[tuple[str, str], Answer]:
        """Several lookups at once."""
        results = await asyncio.gather(*(self.lookup(n, t) for n, t in wanted))
        return {key(n, t): a for (n, t), a in zip(wanted, results)}
