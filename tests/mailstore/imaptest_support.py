"""Shared helpers for the mailstore storage/IMAP tests (imported by the tests
and by ``conftest.py``; a module name unique in the repository)."""
from __future__ import annotations

import ssl
from pathlib import Path

from correo_server import passwords
from correo_server.config import AuthSettings, Domain, Listen, MailstoreConfig, ServerConfig
from correo_server.directory import Directory, MailboxEntry
from correo_server.guard import ConnectionGate, LoginThrottle
from correo_server.mailstore.context import MailstoreContext
from correo_server.mailstore.store import Store

PASSWORD = "secret-pw"
ALICE = "alice@example.com"
BOB = "bob@example.com"
CAROL = "carol@example.com"  # suspended


def password_hash(pw: str) -> str:
    return passwords.hash_password(pw, passwords.stable_salt("t"))


class StaticDirectory:
    """What the servers hold: something with ``get()`` returning a Directory
    (the service uses a Reloading); tests swap ``value`` to change it."""

    def __init__(self, value: Directory) -> None:
        self.value = value

    def get(self) -> Directory:
        return self.value

    force = get


def make_config(tmp_path: Path, **mailstore) -> ServerConfig:
    local = Listen("127.0.0.1", 0)
    settings = dict(imap=local, imaps=local, pop3=local, pop3s=local, lmtp=local, http=local,
                    data_dir=str(tmp_path / "mail"), min_free_bytes=0,
                    max_line_length=8192, max_literal_bytes=1024 * 1024)
    settings.update(mailstore)
    return ServerConfig(
        name="t",
        hostname="mail.example.com",
        domains=(Domain("example.com", aliases=("example.net",)),),
        auth=AuthSettings(failure_delay_seconds=0.01, failure_delay_max_seconds=0.05),
        mailstore=MailstoreConfig(**settings),
        base_dir=str(tmp_path),
    )


def make_directory(config: ServerConfig, quota: int = 10 * 1024 * 1024) -> StaticDirectory:
    h = password_hash(PASSWORD)
    entries = (
        MailboxEntry(ALICE, name="alice", password_hash=h, quota_bytes=quota, aliases=("postmaster@example.com",)),
        MailboxEntry(BOB, name="bob", password_hash=h, quota_bytes=quota),
        MailboxEntry(CAROL, name="carol", password_hash=h, suspended=True),
    )
    return StaticDirectory(Directory(entries, config))


def make_context(config: ServerConfig, directory, store: Store, tls=None) -> MailstoreContext:
    ms = config.mailstore
    return MailstoreContext(
        config=config, directory=directory, store=store, tls=tls,
        throttle=LoginThrottle.from_settings(config.auth),
        imap_gate=ConnectionGate(ms.max_connections, ms.max_connections_per_client),
        pop3_gate=ConnectionGate(ms.max_connections, ms.max_connections_per_client),
    )


def client_tls() -> ssl.SSLContext:
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c
