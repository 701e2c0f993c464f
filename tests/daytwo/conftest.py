"""Fixtures for the day-two features (client autoconfiguration, MTA-STS):
a private CA, and the queue's test pieces (loopback DNS, loopback MX hosts,
the queue harness) from ``tests/queue/queue_support.py``."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "queue"))
sys.path.append(str(HERE.parent))  # e2e.conftest: start_stack, the `correo up` runner
from daytwo_pki import TestCA  # noqa: E402


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def _dns_server():
    from dnslib.server import DNSLogger, DNSServer
    from queue_support import Zone

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


@pytest.fixture
async def harness(tmp_path, dns_zone):
    """The queue (in this process, on a fake clock) with loopback MX hosts and DNS."""
    from queue_support import make_harness

    from correo_server.queue.clock import FakeClock

    h = await make_harness(tmp_path, dns_zone, FakeClock())
    yield h
    if h.service is not None:
        await h.service.stop(grace=1.0)
    for s in h.servers:
        s.close()
