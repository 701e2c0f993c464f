"""Fixtures for the queue's tests (the pieces live in ``queue_support``, a
uniquely named module, so that test files import them whatever other
conftest.py files the run collects)."""
from __future__ import annotations

import ssl
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from dnslib.server import DNSLogger, DNSServer  # noqa: E402
from queue_support import Zone, make_cert, make_harness  # noqa: E402

from correo_server.queue.clock import FakeClock, SystemClock  # noqa: E402


@pytest.fixture(scope="session")
def _dns_server():
    zone = Zone()
    server = DNSServer(zone, port=0, address="127.0.0.1", tcp=False,
                       logger=DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False))
    server.start_thread()
    zone.port = server.server.server_address[1]
    yield zone
    server.stop()
    server.server.server_close()


@pytest.fixture
def dns_zone(_dns_server):
    """The loopback DNS server's zone, empty at the start of each test."""
    _dns_server.clear()
    yield _dns_server
    _dns_server.clear()


@pytest.fixture(scope="session")
def server_tls(tmp_path_factory) -> ssl.SSLContext:
    cert, key = make_cert(tmp_path_factory.mktemp("tls"))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


@pytest.fixture
async def harness(tmp_path, dns_zone):
    h = await make_harness(tmp_path, dns_zone, FakeClock())
    yield h
    if h.service is not None:
        await h.service.stop(grace=1.0)
    for s in h.servers:
        s.close()


@pytest.fixture
async def realtime(tmp_path, dns_zone):
    h = await make_harness(tmp_path, dns_zone, SystemClock())
    yield h
    if h.service is not None:
        await h.service.stop(grace=1.0)
    for s in h.servers:
        s.close()
