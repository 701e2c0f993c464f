"""Fixtures for the relay's tests: a running relay in front of a recording
LMTP sink that plays the queue (and can refuse, stall or be down), key
material made on the fly, and a raw line-level SMTP client for bad input.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from correo_server import directory as dirmod
from correo_server import passwords
from correo_server.config import AuthSettings, Domain, Listen, RelayConfig, ServerConfig, TLSFiles
from correo_server.directory import MailboxEntry
from correo_server.relay.service import RelayService

sys.path.insert(0, str(Path(__file__).parent))  # for relay_helpers, whatever the import mode
from relay_helpers import HOSTNAME, PASSWORDS, LMTPSink  # noqa: E402

LOCAL = ("127.0.0.1", 0)


# -- key material (made once per run) -------------------------------------------
@pytest.fixture(scope="session")
def tls_pair(tmp_path_factory) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTNAME)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOSTNAME)]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


@pytest.fixture(scope="session")
def dkim_pair() -> tuple[bytes, str]:
    """(private key PEM, the p= value of the DNS TXT record)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, base64.b64encode(pub).decode()


@pytest.fixture(scope="session")
def mailboxes() -> list[MailboxEntry]:
    def h(addr):
        return passwords.hash_password(PASSWORDS[addr], passwords.stable_salt("relay-tests", addr))
    return [
        MailboxEntry("alice@example.com", name="alice", password_hash=h("alice@example.com"),
                     aliases=("postmaster@example.com", "al@example.com")),
        MailboxEntry("bob@example.com", name="bob", password_hash=h("bob@example.com")),
        MailboxEntry("carol@example.com", name="carol", password_hash=h("carol@example.com"), suspended=True),
        MailboxEntry("δοκιμή@example.com", name="utf8", password_hash=h("δοκιμή@example.com")),
    ]


@pytest.fixture
async def sink():
    s = LMTPSink()
    await s.start()
    yield s
    await s.stop()


# -- a running relay ------------------------------------------------------------
@dataclasses.dataclass
class Relay:
    service: RelayService
    ports: dict[str, int]
    sink: LMTPSink
    config: ServerConfig
    config_dir: Path

    @property
    def smtp(self) -> int:
        return self.ports["smtp"]

    @property
    def submission(self) -> int:
        return self.ports["submission"]


@pytest.fixture
async def make_relay(tmp_path, sink, tls_pair, dkim_pair, mailboxes):
    """``await make_relay(tls=True, dkim=True, relay={...}, auth={...}, **service_kwargs)``."""
    started: list[RelayService] = []

    async def make(*, tls: bool = False, dkim: bool = True, relay: dict[str, Any] | None = None,
                   auth: dict[str, Any] | None = None, **kwargs) -> Relay:
        config_dir = tmp_path / f"relay{len(started)}"
        config_dir.mkdir()
        (config_dir / "directory.yaml").write_text(dirmod.dump(mailboxes), encoding="utf-8")
        if tls:
            (config_dir / "tls").mkdir()
            (config_dir / "tls/tls.crt").write_bytes(tls_pair[0])
            (config_dir / "tls/tls.key").write_bytes(tls_pair[1])
        if dkim:
            (config_dir / "dkim").mkdir()
            (config_dir / "dkim/example.com.key").write_bytes(dkim_pair[0])
        relay_cfg = RelayConfig(smtp=Listen(*LOCAL), submission=Listen(*LOCAL), smtps=Listen(*LOCAL),
                                http=Listen(*LOCAL), queue=Listen("127.0.0.1", sink.port))
        relay_cfg = dataclasses.replace(relay_cfg, **(relay or {}))
        auth_cfg = dataclasses.replace(AuthSettings(failure_delay_seconds=0.01), **(auth or {}))
        config = ServerConfig(
            name="test", hostname=HOSTNAME,
            domains=(Domain("example.com", aliases=("example.net",), hostname=HOSTNAME,
                            dkim_selector="sel1", dkim_key_file="dkim/example.com.key"),
                     Domain("other.example", hostname=HOSTNAME)),
            tls=TLSFiles() if tls else None, auth=auth_cfg, relay=relay_cfg, base_dir=str(config_dir))
        kwargs.setdefault("handoff_timeout", 5.0)
        kwargs.setdefault("grace", 1.0)
        service = RelayService(config, str(config_dir), **kwargs)
        ports = await service.start()
        started.append(service)
        return Relay(service, ports, sink, config, config_dir)

    yield make
    for service in started:
        await service.stop()


