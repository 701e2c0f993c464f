"""Fixtures for the day-two features (client autoconfiguration, MTA-STS):
a private CA, and the queue's test pieces (loopback DNS, loopback MX hosts,
the queue harness) from ``tests/queue/queue_support.py``."""
from __future__ import annotations

import importlib.util
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


# The queue's own fixtures, shared rather than copied: the loopback DNS server
# (``dns_zone``) and the in-process queue on a fake clock (``harness``).
_spec = importlib.util.spec_from_file_location("daytwo_queue_conftest", HERE.parent / "queue" / "conftest.py")
_queue_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_queue_fixtures)
_dns_server, dns_zone, harness = _queue_fixtures._dns_server, _queue_fixtures.dns_zone, _queue_fixtures.harness
