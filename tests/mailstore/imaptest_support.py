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


# ---------------------------------------------------------------------------
# A running IMAP server for blocking clients (imaplib, imapclient, mbsync)
# ---------------------------------------------------------------------------

import asyncio
import re
import socket
import threading
from dataclasses import replace as _replace


class ServerThread:
    """The mailstore's IMAP server (plain and implicit TLS) on 127.0.0.1 port 0,
    running its own event loop in a thread.  ``call(coro)`` runs a coroutine
    there (e.g. ``store.deliver``)."""

    def __init__(self, config: ServerConfig, directory, tls_files=None, registry=None) -> None:
        from correo_server.mailstore.imap.server import serve_imap
        from correo_server.tlsfiles import ServerTLS

        self.config = config
        self.directory = directory
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        tls = ServerTLS(*tls_files) if tls_files else None

        async def start():
            self.store = Store.from_config(config, directory)
            self.ctx = make_context(config, directory, self.store, tls=tls)
            self.server = await serve_imap(self.ctx, config.mailstore.imap, registry=registry)
            self.tls_server = await serve_imap(self.ctx, config.mailstore.imaps, implicit_tls=True) if tls else None

        self.call(start())
        self.port = self.server.sockets[0].getsockname()[1]
        self.tls_port = self.tls_server.sockets[0].getsockname()[1] if self.tls_server else None

    def call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def deliver(self, address: str, data: bytes, **kw) -> int:
        return self.call(self.store.deliver(address, data, **kw))

    def folder(self, address: str, name: str = "INBOX"):
        async def get():
            return await (await self.store.mailbox(address)).folder(name)
        return self.call(get())

    def stop(self) -> None:
        async def stop():
            self.server.close()
            if self.tls_server:
                self.tls_server.close()
            await asyncio.sleep(0.05)
            await self.store.close()
        try:
            self.call(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


class RawClient:
    """A line-level IMAP client for checking exact responses."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.greeting = self.readline()
        self.n = 0

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def readline(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line + b"\r\n"

    def read_response(self, tag: bytes) -> list[bytes]:
        """Lines (literals inline) up to and including the tagged one."""
        lines = []
        while True:
            line = self.readline()
            m = re.search(rb"\{(\d+)\}\r\n$", line)
            while m:
                n = int(m.group(1))
                while len(self.buf) < n:
                    chunk = self.sock.recv(65536)
                    if not chunk:
                        raise EOFError
                    self.buf += chunk
                line += self.buf[:n]
                self.buf = self.buf[n:]
                rest = self.readline()
                line += rest
                m = re.search(rb"\{(\d+)\}\r\n$", rest)
            lines.append(line)
            if line.startswith(tag + b" ") or line.startswith(b"* BYE") and tag == b"*":
                return lines

    def cmd(self, text: bytes | str) -> list[bytes]:
        """Send ``tagN text`` and read to its tagged reply."""
        if isinstance(text, str):
            text = text.encode()
        self.n += 1
        tag = b"t%d" % self.n
        self.send(tag + b" " + text + b"\r\n")
        return self.read_response(tag)

    def login(self, user: str = ALICE, password: str = PASSWORD) -> None:
        assert self.cmd(f'LOGIN {user} "{password}"')[-1].split()[1] == b"OK"

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
