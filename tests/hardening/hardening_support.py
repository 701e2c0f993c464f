"""Helpers for the hardening tests (a uniquely named module): raw clients
that say exactly what a hostile client says, servers started in-process
with small configurations, and a process's resident memory."""
from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from correo_server import directory as dirmod
from correo_server import passwords
from correo_server.config import (AuthSettings, Domain, Listen, MailstoreConfig, RelayConfig, ServerConfig,
                                  TLSFiles)
from correo_server.directory import MailboxEntry

HOSTNAME = "mx.example.com"
LOCAL = Listen("127.0.0.1", 0)
PASSWORDS = {"alice@example.com": "alice-secret", "bob@example.com": "bob-secret"}


QUOTAS = {"bob@example.com": 6000}  # octets
ALIASES = {"alice@example.com": ("al@example.com",)}


def mailboxes() -> list[MailboxEntry]:
    return [MailboxEntry(addr, name=addr.split("@")[0],
                         password_hash=passwords.hash_password(pw, passwords.stable_salt("hardening", addr)),
                         quota_bytes=QUOTAS.get(addr, 0), aliases=ALIASES.get(addr, ()))
            for addr, pw in PASSWORDS.items()]


def write_directory(config_dir: Path) -> None:
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "directory.yaml").write_text(dirmod.dump(mailboxes()), encoding="utf-8")


def relay_config(config_dir: Path, *, queue_port: int = 9, auth: dict | None = None, **relay) -> ServerConfig:
    relay_cfg = dataclasses.replace(RelayConfig(smtp=LOCAL, submission=LOCAL, smtps=LOCAL, http=LOCAL,
                                                queue=Listen("127.0.0.1", queue_port)), **relay)
    return ServerConfig(name="test", hostname=HOSTNAME, domains=(Domain("example.com", hostname=HOSTNAME),),
                        auth=dataclasses.replace(AuthSettings(failure_delay_seconds=0.01), **(auth or {})),
                        relay=relay_cfg, base_dir=str(config_dir))


def mailstore_config(config_dir: Path, data_dir: Path, *, auth: dict | None = None, tls: bool = True,
                     **mailstore) -> ServerConfig:
    ms = dataclasses.replace(MailstoreConfig(imap=LOCAL, imaps=LOCAL, pop3=LOCAL, pop3s=LOCAL, managesieve=LOCAL,
                                             lmtp=LOCAL, http=LOCAL, data_dir=str(data_dir), min_free_bytes=0,
                                             managesieve_enabled=True), **mailstore)
    if tls:
        tls_files(config_dir)
    return ServerConfig(name="test", hostname=HOSTNAME, domains=(Domain("example.com", hostname=HOSTNAME),),
                        tls=TLSFiles() if tls else None,
                        auth=dataclasses.replace(AuthSettings(failure_delay_seconds=0.01), **(auth or {})),
                        mailstore=ms, base_dir=str(config_dir))


class Raw:
    """A line client that sends exactly what it is told and reads replies:
    SMTP-style (``250-...``/``250 ...``) with :meth:`reply`, or one line with
    :meth:`line`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> "Raw":
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        return cls(reader, writer)

    async def line(self, timeout: float = 30) -> bytes:
        return await asyncio.wait_for(self.reader.readline(), timeout)

    async def reply(self, timeout: float = 30) -> tuple[int, list[str]]:
        lines = []
        while True:
            raw = await self.line(timeout)
            if not raw:
                raise ConnectionError(f"closed after {lines!r}")
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(text[4:])
            if text[3:4] != "-":
                return int(text[:3]), lines

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def cmd(self, line: str) -> tuple[int, list[str]]:
        await self.send(line.encode() + b"\r\n")
        return await self.reply()

    async def nothing_more(self, wait: float = 0.5) -> bytes:
        """What arrives within ``wait`` seconds (b"" when nothing)."""
        try:
            return await asyncio.wait_for(self.reader.read(65536), wait)
        except asyncio.TimeoutError:
            return b""

    async def closed(self, timeout: float = 30) -> bool:
        try:
            while await asyncio.wait_for(self.reader.read(65536), timeout):
                pass
            return True
        except (asyncio.TimeoutError, ConnectionError):
            return False

    def close(self) -> None:
        self.writer.close()


def rss_bytes(pid: int | str = "self") -> int:
    """Resident memory of a process now (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def tls_files(directory: Path) -> None:
    """A self-signed key pair for the test hostname in ``directory/tls/``
    (where ``TLSFiles()`` looks)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTNAME)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOSTNAME)]), critical=False)
            .sign(key, hashes.SHA256()))
    (directory / "tls").mkdir(parents=True, exist_ok=True)
    (directory / "tls/tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "tls/tls.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
