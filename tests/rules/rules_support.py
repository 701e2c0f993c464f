"""Helpers for the mail rules tests: a mailstore service on the test's event
loop, configured as the renderer would, a queue stand-in that records what
the rules hand it over LMTP (correo's own LMTP server, so the exchange is
the real one), an LMTP client, and a clock the test moves."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from correo_server import config as configmod
from correo_server import directory as directorymod
from correo_server.config import AuthSettings, Domain, Listen, MailstoreConfig, ServerConfig
from correo_server.directory import MailboxEntry
from correo_server.mailstore.service import MailstoreService
from correo_server.wire.client import Connection
from correo_server.wire.data import wire_data
from correo_server.wire.replies import Reply
from correo_server.wire.server import Listener, Transaction

ANA = "ana@example.com"
BOB = "bob@example.com"
START = 1_800_000_000.0  # 2027-01-15


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Submitted:
    sender: str
    recipients: list[str]
    data: bytes


@dataclass
class RecordingQueue:
    """Stands in for the queue's LMTP listener; ``refuse`` makes it answer 451."""

    received: list[Submitted] = field(default_factory=list)
    refuse: bool = False
    listener: Listener | None = None
    port: int = 0

    # the wire server's Handler
    def mail(self, txn: Transaction) -> Reply | None:
        return Reply(451, "4.3.0", "queue unavailable (test)") if self.refuse else None

    def rcpt(self, txn: Transaction, address: str, params: dict) -> Reply | None:
        return None

    async def data(self, txn: Transaction, content: bytes) -> list[Reply]:
        self.received.append(Submitted(txn.sender, list(txn.rcpts), content))
        return [Reply(250, "2.0.0", f"<{r}> Ok: queued as Q{len(self.received)}") for r in txn.rcpts]

    async def start(self) -> None:
        self.listener = Listener(self, hostname="queue.test", max_bytes=50 * 1024 * 1024)
        server = await self.listener.start("127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.listener is not None:
            await self.listener.close(1.0)


def config(data_dir: Path, queue_port: int, **domain) -> ServerConfig:
    local = Listen("127.0.0.1", 0)
    return ServerConfig(
        name="rules-test", hostname="mail.example.com",
        domains=(Domain("example.com", aliases=("example.net",), **domain),),
        auth=AuthSettings(failure_delay_seconds=0.01, failure_delay_max_seconds=0.05),
        mailstore=MailstoreConfig(imap=local, imaps=local, pop3=local, pop3s=local, lmtp=local, http=local,
                                  managesieve=local, queue=Listen("127.0.0.1", queue_port), data_dir=str(data_dir),
                                  min_free_bytes=0, imap_enabled=False, pop3_enabled=False),
        log_format="console",
    )


def entries(**ana) -> list[MailboxEntry]:
    return [MailboxEntry(ANA, name="ana", aliases=("anita@example.com",), **ana), MailboxEntry(BOB, name="bob")]


class Mailstore:
    """A running MailstoreService with a recording queue."""

    def __init__(self, tmp: Path, queue: RecordingQueue, clock: Clock) -> None:
        self.tmp = tmp
        self.queue = queue
        self.clock = clock
        self.service: MailstoreService | None = None
        self.domain: dict = {}

    async def start(self, mailboxes: list[MailboxEntry], **domain) -> "Mailstore":
        self.domain = domain
        cfg = config(self.tmp / "data", self.queue.port, **domain)
        folder = self.tmp / "config"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / configmod.CONFIG_FILE).write_text(configmod.dump(cfg))
        (folder / configmod.DIRECTORY_FILE).write_text(directorymod.dump(mailboxes))
        self.service = MailstoreService(configmod.load(folder), str(folder))
        self.ports = await self.service.start()
        self.service.ctx.clock = self.clock
        return self

    def set_directory(self, mailboxes: list[MailboxEntry]) -> None:
        (self.tmp / "config" / configmod.DIRECTORY_FILE).write_text(directorymod.dump(mailboxes))
        self.ctx.directory.force()

    @property
    def ctx(self):
        assert self.service is not None and self.service.ctx is not None
        return self.service.ctx

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()

    async def lmtp(self, sender: str, rcpts: list[str], message: bytes) -> list[Reply]:
        """One LMTP transaction as the queue makes it: a reply per recipient."""
        conn = await Connection.open("mailstore", "127.0.0.1", self.ports["lmtp"], connect_timeout=10, timeout=60)
        try:
            assert (await conn.hello("queue.test", lmtp=True)).ok
            outcome = await conn.transaction(sender, rcpts, wire_data(message), size=len(message))
            return outcome.replies
        finally:
            await conn.quit()

    async def folder(self, address: str, name: str) -> list[bytes]:
        """The messages of a folder (empty when it does not exist)."""
        mbox = await self.ctx.store.mailbox(address)
        if not await mbox.exists(name):
            return []
        folder = await mbox.folder(name)
        return [await folder.read(m.uid) for m in folder.messages()]

    async def flags(self, address: str, name: str) -> list[frozenset[str]]:
        folder = await (await self.ctx.store.mailbox(address)).folder(name)
        return [m.flags for m in folder.messages()]

    async def create_folder(self, address: str, name: str) -> None:
        await (await self.ctx.store.mailbox(address)).create(name)

    def metric(self, name: str, **labels) -> float:
        return self.ctx.metrics.value(name, **labels)


def message(subject: str = "hello", *, sender: str = "carol@elsewhere.org", to: str = ANA,
            extra: str = "", body: str = "Hi there.\r\n") -> bytes:
    return (f"From: Carol <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{abs(hash((subject, sender, extra)))}@elsewhere.org>\r\n{extra}\r\n{body}").encode()


def replace(entry: MailboxEntry, **changes) -> MailboxEntry:
    return dataclasses.replace(entry, **changes)
