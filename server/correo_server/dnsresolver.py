"""One DNS resolver construction for every part of correo that asks DNS.

The queue asks for MX and address records (:mod:`.queue.mx`), the relay's
defences ask for SPF, DKIM and DMARC TXT records and DNS blocklists
(:mod:`.mailauth`, :mod:`.scanning.dnsbl`).  They all build their resolver
here, from the same setting: a list of nameservers as ``host:port`` strings
(``[::1]:5353`` for IPv6, a bare host meaning port 53), so that tests and
air-gapped sites use their own DNS (DESIGN.md, "DNS is configurable").  An
empty list means the system's resolver configuration (``/etc/resolv.conf``).

Answers are cached for their TTL in one LRU cache per resolver, as every MTA
does (the queue's MX lookups use it); the relay's sender checks switch it
off and keep answers in their own process-wide cache instead
(:mod:`.mailauth.dnscache`, on an injectable clock, RFC 2308 negative
caching).
"""
from __future__ import annotations

import dns.asyncresolver
import dns.nameserver
import dns.resolver

from .config import Listen


def nameserver(item: str) -> dns.nameserver.Do53Nameserver:
    """A nameserver from ``host``, ``host:port`` or ``[v6]:port``."""
    text = item.strip()
    if text.startswith("[") or text.count(":") == 1:
        listen = Listen.parse(text)
    else:  # a bare IPv4 address, host name or unbracketed IPv6 address
        listen = Listen(text, 53)
    return dns.nameserver.Do53Nameserver(listen.host, listen.port)


def make_resolver(nameservers: tuple[str, ...] | list[str], timeout: float = 5.0) -> dns.asyncresolver.Resolver:
    """An asyncio resolver asking ``nameservers`` (the system's when empty);
    each try waits at most 5 s, a whole lookup at most ``timeout``."""
    if nameservers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [nameserver(item) for item in nameservers]
    else:
        resolver = dns.asyncresolver.Resolver()
    resolver.timeout = min(timeout, 5.0)
    resolver.lifetime = timeout
    resolver.cache = dns.resolver.LRUCache(10000)  # answers kept for their TTL
    return resolver
