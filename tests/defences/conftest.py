"""Fixtures for the defences' tests (the pieces live in ``defences_support``):
one loopback DNS server and one real rspamd per session; a resolver that
asks only that DNS server."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from defences_support import Zone, rspamd_binary, start_dns, start_rspamd  # noqa: E402

from correo_server.dnsresolver import make_resolver  # noqa: E402


@pytest.fixture(scope="session")
def _dns_server():
    zone = Zone()
    server = start_dns(zone)
    yield zone
    server.stop()
    server.server.server_close()


@pytest.fixture
def zone(_dns_server):
    """The loopback DNS server's zone, empty at the start of each test."""
    _dns_server.clear()
    yield _dns_server
    _dns_server.clear()


@pytest.fixture
def resolver(zone):
    """A resolver asking the loopback DNS only; a silent name times out in 1.5 s."""
    return make_resolver([f"127.0.0.1:{zone.port}"], timeout=1.5)


@pytest.fixture(scope="session")
def rspamd(tmp_path_factory, _dns_server):
    if rspamd_binary() is None:
        pytest.skip("rspamd is not installed (Debian: apt-get install rspamd; scripts/setup-test-env does it)")
    server = start_rspamd(tmp_path_factory.mktemp("rspamd"), _dns_server.port)
    yield server
    server.stop()
