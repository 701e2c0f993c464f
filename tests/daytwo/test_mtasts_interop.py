"""Both halves of MTA-STS agree: a domain hosted by one correo publishes its
policy with ``correo serve autoconfig`` (behind TLS, as its Ingress puts it)
and its ``_mta-sts`` TXT record as ``status.dnsRecords`` says; another
correo's queue, sending to that domain, finds the record, fetches that
policy over HTTPS and enforces it.  All on loopback."""
from __future__ import annotations

import asyncio
import ssl

import pytest
from daytwo_support import maildomain, server_config
from dnslib import TXT
from test_mtasts_outbound import DOMAIN, MX, POLICY_HOST, recipient

from correo_operator import status as statusmod
from correo_server.autoconfig.service import AutoconfigService
from correo_server.config import Listen, MtaStsClient


class TlsFront:
    """What the Ingress does for the autoconfig Service: TLS for ``mta-sts.<domain>``
    in front, plain HTTP to the service behind (bytes passed through unchanged)."""

    def __init__(self, context: ssl.SSLContext, backend_port: int) -> None:
        self.context, self.backend_port = context, backend_port
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        b_reader, b_writer = await asyncio.open_connection("127.0.0.1", self.backend_port)
        await asyncio.gather(self._pipe(reader, b_writer), self._pipe(b_reader, writer))

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0, ssl=self.context)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def published(tmp_path, test_ca, dns_zone):
    """remote.test hosted by "another correo" with an enforced policy: its
    autoconfig service behind TLS, and the TXT record its status names."""
    domain = maildomain(domain=DOMAIN, hostname=MX, tls={"secretName": "remote-tls"},
                        mtaSts={"mode": "enforce", "maxAgeSeconds": 86400})
    service = AutoconfigService(server_config(domain, listen=Listen("127.0.0.1", 0), http=Listen("127.0.0.1", 0)),
                                str(tmp_path))
    ports = await service.start()
    front = TlsFront(test_ca.server_context(POLICY_HOST), ports["autoconfig"])
    await front.start()
    dns_zone.a(POLICY_HOST, "127.0.0.1")
    (txt,) = [r for r in statusmod.dns_records(domain, None) if r["name"] == f"_mta-sts.{DOMAIN}."]
    dns_zone._add(f"_mta-sts.{DOMAIN}", "TXT", TXT(txt["value"]))
    yield {"service": service, "front": front, "txt": txt["value"]}
    await front.stop()
    await service.stop()


async def sender(harness, test_ca, published, *, cert: str):
    harness.zone.mx(DOMAIN, (10, MX))
    mx1 = await harness.add_mx(MX, "127.0.0.2", tls=test_ca.server_context(cert))
    await harness.start(mta_sts=MtaStsClient(ca_file=str(test_ca.ca_file), https_port=published["front"].port,
                                             fetch_timeout_seconds=5))
    return mx1


async def test_the_queue_enforces_the_policy_correo_publishes(harness, test_ca, published):
    mx1 = await sender(harness, test_ca, published, cert="other.example")
    await harness.send("alice@example.com", ["bob@remote.test"])
    await harness.settle()

    assert mx1.messages == []
    rcpt = await recipient(harness, "bob@remote.test")
    policy_id = published["txt"].removeprefix("v=STSv1; id=")
    assert rcpt["state"] == "deferred"
    assert rcpt["history"][-1]["reply"].startswith(
        f"451 4.7.5 MTA-STS policy of remote.test (enforce, id {policy_id}) not met by {MX}")
    assert published["service"].served == {"mta-sts:ok": 1}  # fetched once, over HTTPS, from the service


async def test_a_matching_certificate_passes_the_published_policy(harness, test_ca, published):
    mx1 = await sender(harness, test_ca, published, cert=MX)
    await harness.send("alice@example.com", ["bob@remote.test"])
    await harness.settle()

    assert [(m.recipients, m.tls) for m in mx1.messages] == [(["bob@remote.test"], True)]
    assert published["service"].served == {"mta-sts:ok": 1}
