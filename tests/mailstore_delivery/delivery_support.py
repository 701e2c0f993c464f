"""Helpers for the LMTP/POP3/service tests: a configuration folder as the
renderer would write it (``config.dump`` + ``directory.dump``), a self-signed
certificate made with ``cryptography``, the mailstore service running in a
thread of its own (so that blocking clients — ``smtplib``, ``poplib``,
``fetchmail`` — can talk to it from the test), and an LMTP client that reads
the per-recipient replies ``smtplib`` does not."""
from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import smtplib
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Coroutine

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from correo_server import config as configmod
from correo_server import directory as directorymod
from correo_server import passwords
from correo_server.config import AuthSettings, Domain, Listen, MailstoreConfig, ServerConfig, TLSFiles
from correo_server.directory import MailboxEntry

ALICE = "alice@example.com"
BOB = "bob@example.com"
CAROL = "carol@example.com"  # suspended
DAVE = "dave@example.com"  # tiny quota
ERIN = "erin@example.com"  # forwards elsewhere, keepCopy false
PASSWORDS = {ALICE: "alice-pw", BOB: "bob-pw", CAROL: "carol-pw", DAVE: "dave-pw", ERIN: "erin-pw"}
DAVE_QUOTA = 3000


def _hash(pw: str) -> str:
    return passwords.hash_password(pw, passwords.stable_salt("delivery-tests", pw))


def mailboxes() -> list[MailboxEntry]:
    return [
        MailboxEntry(ALICE, name="alice", password_hash=_hash(PASSWORDS[ALICE]), quota_bytes=10 * 1024 * 1024,
                     aliases=("postmaster@example.com", "ali@example.com")),
        MailboxEntry(BOB, name="bob", password_hash=_hash(PASSWORDS[BOB])),
        MailboxEntry(CAROL, name="carol", password_hash=_hash(PASSWORDS[CAROL]), suspended=True),
        MailboxEntry(DAVE, name="dave", password_hash=_hash(PASSWORDS[DAVE]), quota_bytes=DAVE_QUOTA),
        MailboxEntry(ERIN, name="erin", password_hash=_hash(PASSWORDS[ERIN]),
                     forward_to=("erin@elsewhere.org",), keep_copy=False),
    ]


def make_tls(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for mail.example.com (EC P-256, valid two days)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail.example.com")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("mail.example.com"),
                                                        x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "tls.crt", folder / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def make_config(data_dir: Path, *, tls: bool = True, plaintext: str = "loopback", **mailstore: Any) -> ServerConfig:
    local = Listen("127.0.0.1", 0)
    settings: dict[str, Any] = dict(imap=local, imaps=local, pop3=local, pop3s=local, lmtp=local, http=local,
                                    data_dir=str(data_dir), min_free_bytes=0, imap_enabled=False)
    settings.update(mailstore)
    return ServerConfig(
        name="test",
        hostname="mail.example.com",
        domains=(Domain("example.com", aliases=("example.net",)),),
        tls=TLSFiles() if tls else None,
        auth=AuthSettings(plaintext=plaintext, failure_delay_seconds=0.01, failure_delay_max_seconds=0.05),
        mailstore=MailstoreConfig(**settings),
        log_format="console",
    )


def write_config_dir(folder: Path, cfg: ServerConfig, entries: list[MailboxEntry] | None = None,
                     tls_pair: tuple[Path, Path] | None = None) -> Path:
    """What the renderer puts in the ConfigMap and Secret, written to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / configmod.CONFIG_FILE).write_text(configmod.dump(cfg))
    (folder / configmod.DIRECTORY_FILE).write_text(directorymod.dump(entries if entries is not None else mailboxes()))
    if cfg.tls is not None:
        assert tls_pair is not None
        (folder / "tls").mkdir(exist_ok=True)
        (folder / cfg.tls.cert_file).write_bytes(tls_pair[0].read_bytes())
        (folder / cfg.tls.key_file).write_bytes(tls_pair[1].read_bytes())
    return folder


class ServiceThread:
    """``MailstoreService`` on an event loop in a thread of its own."""

    def __init__(self, config_dir: Path) -> None:
        from correo_server.mailstore.service import MailstoreService

        self.config_dir = config_dir
        self.config = configmod.load(config_dir)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.service = MailstoreService(self.config, str(config_dir))
        self.ports: dict[str, int] = self.run(self.service.start())

    def run(self, coro: Coroutine, timeout: float = 60) -> Any:
        fut: Future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    @property
    def ctx(self):
        return self.service.ctx

    @property
    def store(self):
        return self.service.ctx.store

    def stop(self) -> None:
        try:
            self.run(self.service.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    # -- reading the store from the test thread --------------------------------------
    def inbox(self, address: str) -> list:
        async def go():
            folder = await (await self.store.mailbox(address)).folder("INBOX")
            return folder.uidvalidity, folder.messages()
        return self.run(go())

    def read(self, address: str, uid: int) -> bytes:
        async def go():
            folder = await (await self.store.mailbox(address)).folder("INBOX")
            return await folder.read(uid)
        return self.run(go())


@dataclasses.dataclass
class LmtpResult:
    refused_at_rcpt: dict[str, tuple[int, bytes]]
    replies: dict[str, tuple[int, bytes]]  # per accepted recipient, after DATA


def lmtp_deliver(port: int, sender: str, recipients: list[str], message: bytes,
                 mail_options: tuple[str, ...] = ("BODY=8BITMIME",)) -> LmtpResult:
    """One LMTP transaction; ``smtplib.LMTP`` sends, and the extra replies
    after DATA (one per accepted recipient, RFC 2033) are read here."""
    with smtplib.LMTP("127.0.0.1", port, timeout=30) as client:
        code, _ = client.ehlo()  # LMTP.ehlo sends LHLO
        assert code == 250
        code, text = client.mail(sender, list(mail_options))
        assert code == 250, text
        refused, accepted = {}, []
        for rcpt in recipients:
            code, text = client.rcpt(rcpt)
            if code == 250:
                accepted.append(rcpt)
            else:
                refused[rcpt] = (code, text)
        replies: dict[str, tuple[int, bytes]] = {}
        if accepted:
            code, text = client.data(message)
            replies[accepted[0]] = (code, text)
            for rcpt in accepted[1:]:
                replies[rcpt] = client.getreply()
    return LmtpResult(refused, replies)


class ServerProcess:
    """``correo serve mailstore --config DIR --ports-file F`` as a real process."""

    def __init__(self, config_dir: Path, workdir: Path) -> None:
        import subprocess
        import sys

        self.ports_file = workdir / f"ports-{time.monotonic_ns()}.json"
        self.log_file = open(workdir / "mailstore.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "correo_operator.cli", "serve", "mailstore", "--config", str(config_dir),
             "--ports-file", str(self.ports_file), "--log-format", "json"],
            stdout=self.log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not self.ports_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"mailstore did not start; see {workdir / 'mailstore.log'}")
            time.sleep(0.05)
        self.ports: dict[str, int] = json.loads(self.ports_file.read_text())

    def terminate(self, timeout: float = 30) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        finally:
            self.log_file.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)
        self.log_file.close()


def http_get(port: int, path: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def lmtp_transaction(client: smtplib.LMTP, sender: str, recipients: list[str], message: bytes
                     ) -> dict[str, int]:
    """One transaction on an open LMTP connection: reply code per recipient
    (the RCPT reply when refused there, else the reply after DATA)."""
    codes: dict[str, int] = {}
    code, text = client.mail(sender, ["BODY=8BITMIME"])
    if code != 250:
        raise smtplib.SMTPResponseException(code, text)
    accepted = []
    for rcpt in recipients:
        code, _ = client.rcpt(rcpt)
        if code == 250:
            accepted.append(rcpt)
        else:
            codes[rcpt] = code
    if accepted:
        code, _ = client.data(message)
        codes[accepted[0]] = code
        for rcpt in accepted[1:]:
            codes[rcpt] = client.getreply()[0]
    return codes
