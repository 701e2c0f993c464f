"""Fixtures for the mailstore's storage and IMAP tests: a configuration, a
directory with three mailboxes (alice, bob, suspended carol), a store on a
temporary folder, TLS files, and a running IMAP server on 127.0.0.1 port 0."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from correo_server.config import ServerConfig
from correo_server.mailstore.store import Store
from imaptest_support import make_config, make_context, make_directory


@pytest.fixture
def config(tmp_path: Path) -> ServerConfig:
    return make_config(tmp_path)


@pytest.fixture
def directory(config: ServerConfig):
    return make_directory(config)


@pytest.fixture
async def store(config: ServerConfig, directory):
    s = Store.from_config(config, directory)
    yield s
    await s.close()


@pytest.fixture
def ctx(config, directory, store):
    return make_context(config, directory, store)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed key pair for mail.example.com (openssl)."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "tls.crt", d / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=mail.example.com", "-addext", "subjectAltName=DNS:mail.example.com",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def imap(config, directory):
    """A running IMAP server (plain only) with its store; see ServerThread."""
    from imaptest_support import ServerThread
    server = ServerThread(config, directory)
    yield server
    server.stop()


@pytest.fixture
def imap_tls(tmp_path, tls_files):
    """A server with TLS (STARTTLS and implicit) whose plaintext login is refused
    everywhere (auth.plaintext=never), as on Kubernetes."""
    from dataclasses import replace
    from imaptest_support import ServerThread
    cfg = make_config(tmp_path)
    cfg = replace(cfg, auth=replace(cfg.auth, plaintext="never"))
    server = ServerThread(cfg, make_directory(cfg), tls_files=tls_files)
    yield server
    server.stop()


@pytest.fixture
def raw(imap):
    """A logged-in raw client."""
    from imaptest_support import RawClient
    client = RawClient(imap.port)
    client.login()
    yield client
    client.close()
