"""DNS answers as data, and the per-connection cache that fetches them.

The checks in this package are pure functions over DNS answers
(:class:`Answer` values keyed by ``(name, type)``); this module is the only
place in :mod:`correo_server.mailauth` that talks to DNS.  A
:class:`DnsView` belongs to one SMTP connection: every answer it fetched
stays in it for the connection's life (so that the SPF check of a second
transaction, or the DMARC lookup after the SPF check, asks nothing twice),
and concurrent askers of the same name share one query.  Below it, the
resolver from :func:`correo_server.dnsresolver.make_resolver` keeps answers
for their TTL across connections.

A DNS failure is an answer too: ``temperror`` (server failure, refusal,
timeout), which the checks turn into ``temperror`` verdicts and ``4xx``
replies, never into a pass.  ``nxdomain`` and ``nodata`` are distinct
because the RFCs treat them alike for most checks but not all (a DNSBL
listing needs an address; a void lookup counts for SPF either way).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Mapping

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver

OK = "ok"
NXDOMAIN = "nxdomain"
NODATA = "nodata"
TEMPERROR = "temperror"


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
    try:
        answer = await resolver.resolve(name, rdtype, search=False, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return Answer(NXDOMAIN)
    except dns.resolver.YXDOMAIN:
        return Answer(NXDOMAIN, error="name too long after DNAME substitution")
    except (dns.name.NameTooLong, dns.name.LabelTooLong, dns.name.EmptyLabel) as exc:
        return Answer(NXDOMAIN, error=f"not a valid DNS name: {exc}")
    except dns.resolver.NoNameservers as exc:
        return Answer(TEMPERROR, error=f"DNS server failure for {name} ({rdtype}): {_short(exc)}")
    except (dns.exception.Timeout, dns.resolver.LifetimeTimeout):
        return Answer(TEMPERROR, error=f"DNS timeout for {name} ({rdtype})")
    except dns.exception.DNSException as exc:
        return Answer(TEMPERROR, error=f"DNS error for {name} ({rdtype}): {_short(exc)}")
    if answer.rrset is None:
        return Answer(NODATA)
    return Answer(OK, _records(rdtype, answer))


def _short(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:197] + "..."


class DnsView:
    """The DNS answers one connection has seen (see the module docstring)."""

    def __init__(self, resolver: dns.asyncresolver.Resolver) -> None:
        self.resolver = resolver
        self.answers: dict[tuple[str, str], Answer] = {}
        self._pending: dict[tuple[str, str], asyncio.Future[Answer]] = {}
        self.queries = 0  # DNS questions actually sent (for logs and tests)

    async def lookup(self, name: str, rdtype: str) -> Answer:
        k = key(name, rdtype)
        known = self.answers.get(k)
        if known is not None:
            return known
        pending = self._pending.get(k)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending[k] = future
        try:
            self.queries += 1
            answer = await fetch(self.resolver, k[0], k[1])
        except BaseException as exc:  # cancelled: let the others ask again
            self._pending.pop(k, None)
            if not future.done():
                future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
                future.exception()  # retrieved: no "never retrieved" warning
            raise
        self.answers[k] = answer
        self._pending.pop(k, None)
        future.set_result(answer)
        return answer

    async def lookup_all(self, wanted: list[tuple[str, str]]) -> dict[tuple[str, str], Answer]:
        """Several lookups at once."""
        results = await asyncio.gather(*(self.lookup(n, t) for n, t in wanted))
        return {key(n, t): a for (n, t), a in zip(wanted, results)}
