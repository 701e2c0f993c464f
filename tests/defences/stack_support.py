"""The three real services in this process (mailstore, queue, relay) with the
filters on, the loopback DNS of ``defences_support`` and loopback SMTP
servers playing remote MX hosts: what the no-backscatter, SRS and Junk
tests drive with real clients."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.smtp import SMTP

from correo_server import config as cfgmod
from correo_server import directory as dirmod
from correo_server import passwords
from correo_server.directory import MailboxEntry
from correo_server.mailstore.service import MailstoreService
from correo_server.queue.service import QueueService
from correo_server.relay.service import RelayService
from correo_server.srs import generate_key

HOSTNAME = "mx.example.com"
PASSWORD = "secret"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def entry(local: str, **kw) -> MailboxEntry:
    return MailboxEntry(f"{local}@example.com", name=local,
                        password_hash=passwords.hash_password(PASSWORD, passwords.stable_salt("t", local)), **kw)


def default_mailboxes(small_quota: int = 40_000) -> list[MailboxEntry]:
    return [
        entry("alice"),
        entry("bob", quota_bytes=small_quota),
        entry("carol", forward_to=("dave@far.test",), keep_copy=False),
        entry("erin", forward_to=("frank@example.com",), keep_copy=False),
        entry("frank", suspended=True),
        entry("gina", forward_to=("nobody@example.com",), keep_copy=False),
    ]


@dataclass
class MX:
    """A remote MX host: records what it is sent; ``refuse`` makes it 550 every recipient."""

    name: str
    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    refuse: str | None = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.refuse:
            return self.refuse
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 Ok: queued"


@dataclass
class Stack:
    root: Path
    cfg: cfgmod.ServerConfig
    mailstore: MailstoreService
    queue: QueueService
    relay: RelayService
    remote_port: int
    servers: list = field(default_factory=list)
    mx: dict[str, MX] = field(default_factory=dict)

    @property
    def smtp(self) -> int:
        return self.relay.ports["smtp"]

    @property
    def submission(self) -> int:
        return self.relay.ports["submission"]

    async def add_mx(self, zone, domain: str, addr: str, *, refuse: str | None = None) -> MX:
        """An MX for ``domain`` at ``addr`` (127.0.0.x) on the stack's remote port."""
        handler = MX(domain, refuse=refuse)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(handler, hostname=f"mx.{domain}", enable_SMTPUTF8=True, decode_data=False), addr,
            self.remote_port)
        self.servers.append(server)
        zone.mx(domain, (10, f"mx.{domain}"))
        zone.a(f"mx.{domain}", addr)
        self.mx[domain] = handler
        return handler

    async def text(self, service: str, path: str) -> str:
        """GET a side port (in a thread: the servers run in this event loop)."""
        port = {"relay": self.relay.ports["http"], "queue": self.queue.ports["http"],
                "mailstore": self.mailstore_ports["http"]}[service]

        def get() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as rsp:
                return rsp.read().decode()
        return await asyncio.to_thread(get)

    async def http(self, service: str, path: str) -> dict:
        return json.loads(await self.text(service, path))

    mailstore_ports: dict = field(default_factory=dict)

    async def folder_count(self, address: str, folder: str) -> int:
        store = self.mailstore.ctx.store
        mbox = await store.mailbox(address)
        try:
            return (await mbox.folder(folder)).usage().messages
        except Exception:  # noqa: BLE001 - no such folder yet
            return 0

    async def until(self, predicate, timeout: float = 30.0, what: str = "condition"):
        deadline = asyncio.get_running_loop().time() + timeout
        last = None
        while asyncio.get_running_loop().time() < deadline:
            last = predicate()
            if asyncio.iscoroutine(last):
                last = await last
            if last:
                return last
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; last: {last!r}")

    def set_mailboxes(self, mailboxes: list[MailboxEntry]) -> None:
        """A new directory (as the operator writes it), seen at once by every service."""
        path = self.root / "config" / cfgmod.DIRECTORY_FILE
        tmp = path.with_name(".directory.tmp")
        tmp.write_text(dirmod.dump(mailboxes))
        os.replace(tmp, path)
        for directory in (self.mailstore.ctx.directory, self.relay.context.directory):
            directory.force()

    async def sync(self) -> None:
        """What the relay polls and reports every few seconds, now: the room
        left in the mailboxes, its refusals to the queue."""
        assert await self.relay.context.backscatter.checks.view.refresh()
        assert await self.relay.context.backscatter.reporter.flush()

    async def stop(self) -> None:
        await self.relay.stop()
        await self.queue.stop(grace=1.0)
        await self.mailstore.stop()
        for server in self.servers:
            server.close()


async def start_stack(root: Path, dns_port: int, *, filter: cfgmod.FilterConfig = cfgmod.FilterConfig(),
                      mailboxes: list[MailboxEntry] | None = None, over_quota: str = "reject",
                      domains_before: tuple[str, ...] = ()) -> Stack:
    """``domains_before``: hosted domains listed before example.com (no mailboxes, no SRS keys)."""
    config_dir = root / "config"
    (config_dir / "srs").mkdir(parents=True)
    (config_dir / "srs" / "example.com.keys").write_text(generate_key() + "\n")
    probe = socket.socket()
    probe.bind(("127.0.0.2", 0))
    remote_port = probe.getsockname()[1]
    probe.close()
    p = {name: free_port() for name in ("queue_lmtp", "queue_http", "ms_lmtp", "ms_http")}
    local = cfgmod.Listen("127.0.0.1", 0)
    dns = (f"127.0.0.1:{dns_port}",)
    cfg = cfgmod.ServerConfig(
        name="t", hostname=HOSTNAME,
        domains=(*(cfgmod.Domain(d, hostname=HOSTNAME) for d in domains_before),
                 cfgmod.Domain("example.com", aliases=("example.net",), hostname=HOSTNAME,
                               srs_key_file="srs/example.com.keys",
                               retry=cfgmod.RetryPolicy(initial_delay_seconds=1, max_delay_seconds=1,
                                                        warn_after_seconds=3600, give_up_after_seconds=7200)),),
        auth=cfgmod.AuthSettings(failure_delay_seconds=0.01),
        relay=cfgmod.RelayConfig(smtp=local, submission=local, smtps=local, http=local,
                                 queue=cfgmod.Listen("127.0.0.1", p["queue_lmtp"]), filter=filter,
                                 mailstore_http=cfgmod.Listen("127.0.0.1", p["ms_http"]),
                                 queue_http=cfgmod.Listen("127.0.0.1", p["queue_http"]), rate_limit_messages=0),
        queue=cfgmod.QueueConfig(lmtp=cfgmod.Listen("127.0.0.1", p["queue_lmtp"]),
                                 http=cfgmod.Listen("127.0.0.1", p["queue_http"]),
                                 mailstore=cfgmod.Listen("127.0.0.1", p["ms_lmtp"]), spool_dir=str(root / "spool"),
                                 nameservers=dns, remote_smtp_port=remote_port, connect_timeout_seconds=5,
                                 command_timeout_seconds=10, min_free_bytes=0),
        mailstore=cfgmod.MailstoreConfig(lmtp=cfgmod.Listen("127.0.0.1", p["ms_lmtp"]),
                                         http=cfgmod.Listen("127.0.0.1", p["ms_http"]), data_dir=str(root / "mail"),
                                         queue=cfgmod.Listen("127.0.0.1", p["queue_lmtp"]),
                                         imap_enabled=False, pop3_enabled=False, min_free_bytes=0,
                                         over_quota=over_quota),
        nameservers=dns, log_format="console")
    (config_dir / cfgmod.CONFIG_FILE).write_text(cfgmod.dump(cfg))
    (config_dir / cfgmod.DIRECTORY_FILE).write_text(dirmod.dump(mailboxes or default_mailboxes()))
    cfg = cfgmod.load(config_dir)
    mailstore = MailstoreService(cfg, str(config_dir))
    ms_ports = await mailstore.start()
    queue = QueueService(cfg, str(config_dir), linger=0.2)
    await queue.start()
    relay = RelayService(cfg, str(config_dir), handoff_timeout=10.0, grace=1.0)
    await relay.start()
    return Stack(root, cfg, mailstore, queue, relay, remote_port, mailstore_ports=ms_ports)


def with_filter(**sender_auth) -> cfgmod.FilterConfig:
    return dataclasses.replace(cfgmod.FilterConfig(), sender_auth=cfgmod.SenderAuthConfig(**sender_auth))
