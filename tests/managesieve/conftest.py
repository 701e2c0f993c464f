"""Fixtures for the ManageSieve tests: a server on 127.0.0.1 port 0 over a
temporary data folder (plaintext login from loopback, as Dovecot's default),
and one with TLS whose plaintext login is refused everywhere (as on
Kubernetes)."""
from __future__ import annotations

import pytest

from managesieve_support import Raw, SieveServer, make_tls


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def server(tmp_path, tls_files):
    s = SieveServer(tmp_path, tls_files=tls_files)
    yield s
    s.stop()


@pytest.fixture
def tls_only(tmp_path, tls_files):
    s = SieveServer(tmp_path, tls_files=tls_files, plaintext="never")
    yield s
    s.stop()


@pytest.fixture
def client(server):
    c = Raw(server.port)
    yield c
    c.close()


@pytest.fixture
def alice(client):
    assert client.login()[-1].startswith(b"OK")
    return client
