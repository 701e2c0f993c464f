"""A loopback DNS server that knows no name, for the benchmarks' `correo up`.

Benchmarks never send traffic off the machine: without ``--dns`` correo asks
the system's resolver for MX, SPF, DKIM and DMARC records. Every answer here
is NXDOMAIN, so the sender checks end as "none" after one loopback round
trip, as they would for a domain that publishes nothing."""
from __future__ import annotations

from dnslib.server import BaseResolver, DNSLogger, DNSServer


class _NoName(BaseResolver):
    def resolve(self, request, handler):
        reply = request.reply()
        reply.header.rcode = 3  # NXDOMAIN
        return reply


def start() -> str:
    """Start the server on a thread; returns ``127.0.0.1:PORT`` for ``--dns``."""
    server = DNSServer(_NoName(), port=0, address="127.0.0.1", tcp=False,
                       logger=DNSLogger(log="-request,-reply,-truncated,-error", prefix=False))
    server.start_thread()
    return f"127.0.0.1:{server.server.server_address[1]}"
