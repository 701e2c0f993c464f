"""Test pieces for the queue: a loopback DNS server (dnslib), loopback
SMTP servers playing remote MXes and a smarthost (aiosmtpd), an LMTP server
playing the mailstore (aiosmtpd), a raw LMTP client playing the relay, a
harness that runs ``QueueService`` against all of them, with a fake clock
when a test needs days to pass, and ``correo serve queue`` as a process.
"""
from __future__ import annotations

import asyncio
import datetime
import email
import email.policy
import json
import itertools
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, AuthResult
from dnslib import AAAA, MX, QTYPE, RCODE, RR, A, DNSError
from dnslib.server import BaseResolver

from correo_server import config as configmod
from correo_server import directory as directorymod
from correo_server.config import Domain, Listen, QueueConfig, RetryPolicy, ServerConfig, Smarthost
from correo_server.directory import MailboxEntry
from correo_server.queue.service import QueueService, restore_state
from correo_server.queue.spool import Spool

HOSTNAME = "mx.example.com"


_copies = itertools.count()


def after_restart(spool_dir: Path, scratch: Path) -> dict[str, bytes]:
    """What a queue restarted on ``spool_dir`` as it is now (a crash here)
    would find: every message it would go on delivering, with its bytes.
    Read from a copy, so the running queue is not disturbed."""
    copy = scratch / f"restart-{next(_copies)}"
    shutil.copytree(spool_dir, copy, ignore=shutil.ignore_patterns("*.lock"))
    spool = Spool(copy)
    state = restore_state(spool)
    return {msg.id: spool._read(spool.locs[msg.id], msg.id) for msg in state}


# ---------------------------------------------------------------------------
# DNS
# ---------------------------------------------------------------------------

class Zone(BaseResolver):
    """Answers from a dict; unknown names are NXDOMAIN; some names SERVFAIL."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[RR]] = defaultdict(list)
        self.names: set[str] = set()
        self.servfail: set[str] = set()
        self.silent: set[str] = set()  # never answered: the resolver times out
        self.queries: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def _add(self, name: str, qtype: str, rdata) -> None:
        name = name.rstrip(".").lower()
        with self.lock:
            self.names.add(name)
            self.records[(name, qtype)].append(RR(name, getattr(QTYPE, qtype), rdata=rdata, ttl=60))

    def mx(self, domain: str, *entries: tuple[int, str]) -> None:
        for pref, host in entries:
            self._add(domain, "MX", MX(host, pref))

    def null_mx(self, domain: str) -> None:
        self._add(domain, "MX", MX(".", 0))

    def a(self, name: str, *addresses: str) -> None:
        for addr in addresses:
            self._add(name, "AAAA" if ":" in addr else "A", AAAA(addr) if ":" in addr else A(addr))

    def clear(self) -> None:
        with self.lock:
            self.records.clear()
            self.names.clear()
            self.servfail.clear()
            self.silent.clear()
            self.queries.clear()

    def exists(self, name: str) -> None:
        with self.lock:
            self.names.add(name.rstrip(".").lower())

    def resolve(self, request, handler):
        reply = request.reply()
        qname = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        if qname in self.silent:
            raise DNSError("silent: no answer")  # dnslib drops the request quietly
        with self.lock:
            self.queries.append((qname, qtype))
            if qname in self.servfail:
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            if qname not in self.names:
                reply.header.rcode = RCODE.NXDOMAIN
                return reply
            for rr in self.records.get((qname, qtype), []):
                reply.add_answer(rr)
        return reply




# ---------------------------------------------------------------------------
# SMTP / LMTP servers
# ---------------------------------------------------------------------------

@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes
    tls: bool = False
    login: str | None = None
    server: str = ""
    helo: str = ""

    def parsed(self):
        return email.message_from_bytes(self.data, policy=email.policy.default)


class SinkHandler:
    """Records what it accepts; replies can be scripted per stage."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.messages: list[Received] = []
        self.mail_reply: str | None = None
        self.rcpt_reply: Callable[[str], str | None] | str | None = None
        self.data_reply: str | None = None
        self.connections = 0
        self.transactions = 0

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.transactions += 1
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.rcpt_reply(address) if callable(self.rcpt_reply) else self.rcpt_reply
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        if self.data_reply:
            return self.data_reply
        login = session.auth_data.login.decode() if session.auth_data is not None else None
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content,
                                      tls=session.ssl is not None, login=login, server=self.name,
                                      helo=session.host_name or ""))
        return "250 2.0.0 Ok: queued"


class MailstoreHandler(SinkHandler):
    """LMTP: one reply per recipient after DATA; ``per_rcpt`` scripts them."""

    def __init__(self) -> None:
        super().__init__("mailstore")
        self.per_rcpt: Callable[[str], str | None] | None = None
        self.delivered: list[tuple[str, Received]] = []

    async def handle_DATA(self, server, session, envelope):
        replies = []
        msg = Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content, server="mailstore",
                       helo=session.host_name or "")
        for rcpt in envelope.rcpt_tos:
            reply = self.per_rcpt(rcpt) if self.per_rcpt else None
            if reply:
                replies.append(reply)
            else:
                self.delivered.append((rcpt, msg))
                replies.append(f"250 2.0.0 <{rcpt}> delivered")
        self.messages.append(msg)
        return "\r\n".join(replies)

    def for_rcpt(self, rcpt: str) -> list[Received]:
        return [m for r, m in self.delivered if r == rcpt]


class CountingSMTP(SMTP):
    def __init__(self, handler, *args, **kwargs):
        super().__init__(handler, *args, **kwargs)
        handler.connections += 1


class CountingLMTP(LMTP):
    def __init__(self, handler, *args, **kwargs):
        super().__init__(handler, *args, **kwargs)
        handler.connections += 1


async def start_smtp(handler: SinkHandler, host: str, port: int, *, lmtp: bool = False,
                     tls: ssl.SSLContext | None = None, auth: dict[str, str] | None = None,
                     smtputf8: bool = True, implicit_tls: bool = False) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    kwargs = dict(hostname=handler.name, enable_SMTPUTF8=smtputf8, decode_data=False, loop=loop,
                  tls_context=None if implicit_tls else tls)
    if auth is not None:
        def authenticator(server, session, envelope, mechanism, auth_data):
            login = auth_data.login.decode()
            ok = auth.get(login) == auth_data.password.decode()
            return AuthResult(success=ok, handled=False, auth_data=auth_data)
        kwargs.update(authenticator=authenticator, auth_required=True,
                      auth_require_tls=tls is not None and not implicit_tls)
    cls = CountingLMTP if lmtp else CountingSMTP

    def factory():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # AUTH without TLS: fine on loopback in a test
            return cls(handler, **kwargs)

    return await loop.create_server(factory, host=host, port=port, reuse_address=True,
                                    ssl=tls if implicit_tls else None)


def make_cert(tmp: Path, name: str = "mx.remote.test") -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "tls.crt", tmp / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path




# ---------------------------------------------------------------------------
# A raw LMTP client (what the relay does)
# ---------------------------------------------------------------------------

async def lmtp_send(port: int, sender: str, recipients: list[str], data: bytes, *, host: str = "127.0.0.1",
                    timeout: float = 15.0) -> dict[str, str]:
    """One LMTP transaction; returns the final reply per recipient (the RCPT
    reply when refused there, else the post-DATA one)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)

    async def reply() -> str:
        lines = []
        while True:
            line = (await asyncio.wait_for(reader.readline(), timeout)).decode("utf-8", "replace")
            if not line:
                raise ConnectionError("closed")
            lines.append(line.rstrip("\r\n"))
            if line[3:4] != "-":
                return "\n".join(lines)

    async def cmd(text: str) -> str:
        writer.write(text.encode() + b"\r\n")
        await writer.drain()
        return await reply()

    try:
        await reply()
        await cmd("LHLO relay.test")
        utf8 = " SMTPUTF8" if not (sender.isascii() and all(r.isascii() for r in recipients)) else ""
        r = await cmd(f"MAIL FROM:<{sender}>{utf8}")
        if not r.startswith("250"):
            return {rc: r for rc in recipients}
        results: dict[str, str] = {}
        accepted = []
        for rc in recipients:
            r = await cmd(f"RCPT TO:<{rc}>")
            results[rc] = r
            if r.startswith("250"):
                accepted.append(rc)
        if not accepted:
            return results
        r = await cmd("DATA")
        if not r.startswith("354"):
            return {**results, **{rc: r for rc in accepted}}
        body = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        body = (b"." + body if body.startswith(b".") else body).replace(b"\r\n.", b"\r\n..")
        writer.write(body + b".\r\n")
        await writer.drain()
        for rc in accepted:
            results[rc] = await reply()
        await cmd("QUIT")
        return results
    finally:
        writer.close()


def message(subject: str = "hello", *, sender: str = "alice@example.com", to: str = "bob@remote.test",
            body: str = "Hi there.\n", msgid: str | None = None) -> bytes:
    msgid = msgid or f"<{abs(hash((subject, body)))}@test>"
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: {msgid}\r\n"
            f"Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n\r\n{body}").encode()


# ---------------------------------------------------------------------------
# ``correo serve queue`` as a real process
# ---------------------------------------------------------------------------

class QueueProcess:
    """``correo serve queue --config DIR`` in a subprocess: started (ports
    from its ports file), SIGKILLed, or stopped with SIGTERM."""

    def __init__(self, config_dir: Path, root: Path) -> None:
        self.config_dir = config_dir
        self.ports_file = root / "ports.json"
        self.log = open(root / "queue.log", "ab")
        self.proc: subprocess.Popen | None = None
        self.lmtp_port = 0
        self.http_port = 0

    async def start(self) -> None:
        self.ports_file.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "correo_operator.cli", "serve", "queue", "--config", str(self.config_dir),
             "--ports-file", str(self.ports_file), "--log-format", "json"],
            stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(300):
            if self.ports_file.exists():
                ports = json.loads(self.ports_file.read_text())
                self.lmtp_port, self.http_port = ports["lmtp"], ports["http"]
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"queue exited with {self.proc.returncode}")
            await asyncio.sleep(0.05)
        raise RuntimeError("queue did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.lmtp_port = 0

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


# ---------------------------------------------------------------------------
# The harness
# ---------------------------------------------------------------------------

MAILBOXES = (
    MailboxEntry("alice@example.com", name="alice", aliases=("postmaster@example.com",)),
    MailboxEntry("bob@example.com", name="bob"),
    MailboxEntry("carol@example.com", name="carol", forward_to=("carol@remote.test",), keep_copy=True),
    MailboxEntry("dave@example.com", name="dave", forward_to=("dave@remote.test",), keep_copy=False),
    MailboxEntry("erin@other.org", name="erin"),
)


def make_config(root: Path, *, dns_port: int, mailstore_port: int, remote_port: int,
                retry: RetryPolicy | None = None, smarthost: Smarthost | None = None,
                **queue: object) -> tuple[ServerConfig, Path]:
    """A configuration folder (correo.yaml + directory.yaml) under ``root``."""
    config_dir = root / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    retry = retry or RetryPolicy()
    qkw = dict(lmtp=Listen("127.0.0.1", 0), http=Listen("127.0.0.1", 0),
               mailstore=Listen("127.0.0.1", mailstore_port), spool_dir=str(root / "spool"),
               nameservers=(f"127.0.0.1:{dns_port}",), remote_smtp_port=remote_port,
               connect_timeout_seconds=5, command_timeout_seconds=10, min_free_bytes=0)
    qkw.update(queue)
    cfg = ServerConfig(
        name="test", hostname=HOSTNAME,
        domains=(Domain("example.com", aliases=("example.net",), retry=retry, smarthost=smarthost),
                 Domain("other.org", retry=retry)),
        queue=QueueConfig(**qkw), log_format="console")
    (config_dir / configmod.CONFIG_FILE).write_text(configmod.dump(cfg))
    (config_dir / configmod.DIRECTORY_FILE).write_text(directorymod.dump(list(MAILBOXES)))
    return configmod.load(config_dir), config_dir


@dataclass
class Harness:
    root: Path
    zone: Zone
    clock: object
    mailstore: MailstoreHandler
    remote_port: int
    mx: dict[str, SinkHandler] = field(default_factory=dict)
    servers: list[asyncio.AbstractServer] = field(default_factory=list)
    service: QueueService | None = None
    cfg: ServerConfig | None = None
    config_dir: Path | None = None

    async def add_mx(self, name: str, addr: str, *, tls: ssl.SSLContext | None = None,
                     smtputf8: bool = True) -> SinkHandler:
        handler = SinkHandler(name)
        self.servers.append(await start_smtp(handler, addr, self.remote_port, tls=tls, smtputf8=smtputf8))
        self.zone.a(name, addr)
        self.mx[name] = handler
        return handler

    async def start(self, *, retry: RetryPolicy | None = None, smarthost: Smarthost | None = None,
                    **queue) -> QueueService:
        self.cfg, self.config_dir = make_config(self.root, dns_port=self.zone.port,
                                                mailstore_port=self.mailstore_port, remote_port=self.remote_port,
                                                retry=retry, smarthost=smarthost, **queue)
        self.service = QueueService(self.cfg, str(self.config_dir), clock=self.clock, linger=0.2)
        await self.service.start()
        return self.service

    async def restart(self) -> QueueService:
        assert self.service is not None
        await self.service.stop()
        self.service = QueueService(self.cfg, str(self.config_dir), clock=self.clock, linger=0.2)
        await self.service.start()
        return self.service

    @property
    def runner(self):
        return self.service.runner

    @property
    def lmtp_port(self) -> int:
        return self.service.ports["lmtp"]

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.service.ports['http']}"

    async def send(self, sender: str, recipients: list[str], data: bytes | None = None) -> dict[str, str]:
        return await lmtp_send(self.lmtp_port, sender, recipients, data or message(sender=sender))

    async def settle(self) -> None:
        await self.runner.idle()

    async def run_until(self, when: float) -> None:
        """Move the fake clock to ``when``, stopping at every due time on the way."""
        await self.settle()
        while True:
            due = self.runner.next_due()
            if due is None or due > when:
                break
            self.clock.set(max(due, self.clock.now()))
            await self.settle()
        self.clock.set(when)
        await self.settle()

    def notices(self, rcpt: str) -> list:
        return [m.parsed() for m in self.mailstore.for_rcpt(rcpt) if m.sender in ("", "<>")]


async def make_harness(tmp_path: Path, zone: Zone, clock) -> Harness:
    mailstore = MailstoreHandler()
    ms_server = await start_smtp(mailstore, "127.0.0.1", 0, lmtp=True)
    # One port shared by every loopback MX (127.0.0.2, .3 ...), like port 25.
    probe = await asyncio.get_running_loop().create_server(asyncio.Protocol, "127.0.0.2", 0)
    remote_port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    h = Harness(tmp_path, zone, clock, mailstore, remote_port, servers=[ms_server])
    h.mailstore_port = ms_server.sockets[0].getsockname()[1]
    return h
