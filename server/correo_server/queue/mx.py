"""Where mail for a domain goes: MX hosts from DNS (dnspython).

RFC 5321 section 5.1: MX records in preference order (equal preferences
shuffled), each host's A and AAAA addresses; no MX record at all means the
domain itself is the mail host (implicit MX, its A/AAAA records); a single MX
with preference 0 and the root as exchange is a *null MX* (RFC 7505): the
domain accepts no mail and the recipient bounces at once with ``556 5.1.10``.

Failures are :class:`~correo_server.wire.client.Failure` with a reply: a domain that does not
exist is permanent (``550 5.1.2``), a DNS server failure or timeout is
temporary (``451 4.4.3``) and retried like a ``4xx``.

The resolver's nameservers come from ``queue.nameservers`` (``host:port``
strings), so that tests and air-gapped sites use their own DNS; when that list
is empty the system's resolver configuration is used.  The resolver itself is
built by :func:`correo_server.dnsresolver.make_resolver`, shared with the
relay's defences.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

from ..dnsresolver import make_resolver  # noqa: F401 - built in one place for every part of correo
from ..wire.client import Failure
from ..wire.replies import local_reply


@dataclass(frozen=True)
class MXHost:
    name: str
    preference: int
    addresses: tuple[str, ...]


def _idna(domain: str) -> str:
    domain = domain.rstrip(".").lower()
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


class MXResolver:
    def __init__(self, resolver: dns.asyncresolver.Resolver) -> None:
        self.resolver = resolver

    async def _query(self, name: str, rdtype: str, *, domain: str) -> list | None:
        """Records, [] when the name exists without such records, None on NXDOMAIN."""
        try:
            answer = await self.resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            return None
        except dns.resolver.NoAnswer:
            return []
        except (dns.resolver.NoNameservers, dns.exception.Timeout, dns.resolver.LifetimeTimeout) as exc:
            kind = "timed out" if isinstance(exc, dns.exception.Timeout) else "server failure"
            raise Failure(local_reply(451, "4.4.3", f"DNS lookup of {name} ({rdtype}) for {domain}: {kind}")) from None
        except dns.exception.DNSException as exc:
            raise Failure(local_reply(451, "4.4.3", f"DNS lookup of {name} ({rdtype}) failed: {exc}")) from None
        return list(answer)

    async def addresses(self, host: str, *, domain: str) -> tuple[str, ...] | None:
        """IPv4 then IPv6 addresses of a host; None when the name does not exist."""
        v4 = await self._query(host, "A", domain=domain)
        v6 = await self._query(host, "AAAA", domain=domain)
        if v4 is None and v6 is None:
            return None
        return tuple(r.address for r in (v4 or [])) + tuple(r.address for r in (v6 or []))

    async def hosts(self, domain: str) -> list[MXHost]:
        """The hosts to try for ``domain``, best first.  Raises Failure."""
        name = _idna(domain)
        records = await self._query(name, "MX", domain=domain)
        if records is None:
            raise Failure(local_reply(550, "5.1.2", f"domain {domain} does not exist (DNS: NXDOMAIN)"))
        if len(records) == 1 and records[0].preference == 0 and str(records[0].exchange) == ".":
            raise Failure(local_reply(556, "5.1.10", f"{domain} does not accept mail (null MX, RFC 7505)"))
        if not records:  # implicit MX: the domain's own addresses
            addrs = await self.addresses(name, domain=domain)
            if not addrs:
                raise Failure(local_reply(550, "5.1.2", f"{domain} has no MX and no address records"))
            return [MXHost(name, 0, addrs)]
        shuffled = list(records)
        random.shuffle(shuffled)
        shuffled.sort(key=lambda r: r.preference)  # stable: equal preferences stay shuffled
        hosts: list[MXHost] = []
        errors: list[Failure] = []
        for rec in shuffled:
            exchange = str(rec.exchange).rstrip(".").lower()
            if not exchange:
                continue  # a root exchange among real ones: ignore it
            try:
                addrs = await self.addresses(exchange, domain=domain)
            except Failure as exc:
                errors.append(exc)
                continue
            if addrs:
                hosts.append(MXHost(exchange, rec.preference, addrs))
        if not hosts:
            if errors:
                raise errors[0]
            raise Failure(local_reply(451, "4.4.4", f"no MX host of {domain} has an address"))
        return hosts
