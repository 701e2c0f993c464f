"""Fetching a receiver's MTA-STS policy over HTTPS (RFC 8461 section 3.3).

``GET https://mta-sts.<domain>/.well-known/mta-sts.txt`` with aiohttp:

* the host name is resolved through the queue's own resolver (dnspython,
  ``queue.nameservers``), like the MX lookups, never through the system's;
* the certificate must be valid for ``mta-sts.<domain>`` and chain to a CA
  the queue trusts (``queue.mtaSts.caFile``, else the system's store);
* redirects are not followed, only ``200`` with ``text/plain`` counts, the
  body is read up to 64 KiB, the whole fetch has one timeout.

:func:`fetch_policy` returns the text or raises :class:`FetchError` whose
message says what went wrong ("HTTP 404", "certificate verify failed: ...").
"""
from __future__ import annotations

import asyncio
import socket
import ssl

import aiohttp
import dns.asyncresolver
import dns.exception
import dns.resolver
from aiohttp.abc import AbstractResolver, ResolveResult

from .policy import MAX_POLICY_BYTES, WELL_KNOWN_PATH


class FetchError(Exception):
    """The policy could not be fetched; the message says why."""


class _DnsResolver(AbstractResolver):
    """aiohttp's resolver interface over the queue's dnspython resolver."""

    def __init__(self, resolver: dns.asyncresolver.Resolver) -> None:
        self.resolver = resolver

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        out: list[ResolveResult] = []
        kinds = [("A", socket.AF_INET), ("AAAA", socket.AF_INET6)]
        for rdtype, fam in kinds:
            if family not in (socket.AF_UNSPEC, fam):
                continue
            try:
                answer = await self.resolver.resolve(host, rdtype, search=False)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except dns.exception.DNSException as exc:
                raise OSError(f"DNS lookup of {host} ({rdtype}) failed: {exc}") from None
            out += [ResolveResult(hostname=host, host=r.address, port=port, family=fam, proto=0,
                                  flags=socket.AI_NUMERICHOST) for r in answer]
        if not out:
            raise OSError(f"{host} has no address")
        return out

    async def close(self) -> None:
        return None


def policy_url(domain: str, port: int = 443) -> str:
    host = f"mta-sts.{domain}"
    return f"https://{host}{'' if port == 443 else f':{port}'}{WELL_KNOWN_PATH}"


async def fetch_policy(domain: str, *, resolver: dns.asyncresolver.Resolver, context: ssl.SSLContext,
                       port: int = 443, timeout: float = 30.0) -> str:
    """The policy file of ``domain``; raises :class:`FetchError`."""
    url = policy_url(domain, port)
    connector = aiohttp.TCPConnector(resolver=_DnsResolver(resolver), ssl=context, use_dns_cache=False,
                                     family=socket.AF_UNSPEC)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout),
                                         trust_env=False) as session:
            async with session.get(url, allow_redirects=False,
                                   headers={"User-Agent": "correo (MTA-STS, RFC 8461)"}) as rsp:
                if rsp.status != 200:
                    where = f" to {rsp.headers.get('Location')}" if 300 <= rsp.status < 400 else ""
                    raise FetchError(f"{url}: HTTP {rsp.status}{where} (only 200 counts; redirects are not followed)")
                if rsp.content_type != "text/plain":
                    raise FetchError(f"{url}: Content-Type {rsp.content_type or 'missing'}, not text/plain")
                body = await rsp.content.read(MAX_POLICY_BYTES + 1)
                if len(body) > MAX_POLICY_BYTES:
                    raise FetchError(f"{url}: larger than {MAX_POLICY_BYTES} bytes")
    except aiohttp.ClientConnectorCertificateError as exc:
        raise FetchError(f"{url}: certificate not valid: {exc.certificate_error}") from None
    except aiohttp.ClientSSLError as exc:
        raise FetchError(f"{url}: TLS failed: {exc}") from None
    except asyncio.TimeoutError:
        raise FetchError(f"{url}: timed out after {timeout:g}s") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise FetchError(f"{url}: {exc}") from None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise FetchError(f"{url}: not UTF-8") from None
