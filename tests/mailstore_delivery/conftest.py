"""Fixtures for the LMTP, POP3 and service tests: a configuration folder, a
self-signed certificate, and a running mailstore (``start_mailstore``)."""
from __future__ import annotations

from pathlib import Path

import pytest

from .delivery_support import ServiceThread, make_config, make_tls, write_config_dir


@pytest.fixture(scope="session")
def tls_pair(tmp_path_factory) -> tuple[Path, Path]:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def start_mailstore(tmp_path: Path, tls_pair):
    """Start the mailstore service from a configuration folder under tmp_path
    (``make_config`` keywords override settings); stopped after the test."""
    running: list[ServiceThread] = []

    def start(*, entries=None, **overrides) -> ServiceThread:
        cfg = make_config(tmp_path / "data", **overrides)
        folder = write_config_dir(tmp_path / "config", cfg, entries, tls_pair)
        service = ServiceThread(folder)
        running.append(service)
        return service

    yield start
    for service in running:
        if service.loop.is_running():
            service.stop()


@pytest.fixture
def mailstore(start_mailstore) -> ServiceThread:
    return start_mailstore()
