"""A running ManageSieve server for the tests: the real listener over a real
store on a temporary data folder, in its own event loop thread so that
blocking clients (sieve-connect, sievelib, raw sockets) can talk to it."""
from __future__ import annotations

import asyncio
import base64
import re
import socket
import ssl
import subprocess
import threading
from dataclasses import replace
from pathlib import Path

from correo_server import passwords
from correo_server.config import AuthSettings, Domain, Listen, MailstoreConfig, ServerConfig
from correo_server.directory import Directory, MailboxEntry
from correo_server.guard import ConnectionGate, LoginThrottle
from correo_server.mailstore.context import MailstoreContext
from correo_server.mailstore.managesieve.server import serve_managesieve, shutdown
from correo_server.mailstore.store import Store
from correo_server.metrics import Registry
from correo_server.tlsfiles import ServerTLS

PASSWORD = "sieve-pw"
ALICE = "alice@example.com"
CAROL = "carol@example.com"  # suspended


class StaticDirectory:
    def __init__(self, value: Directory) -> None:
        self.value = value

    def get(self) -> Directory:
        return self.value


def make_config(tmp: Path, *, plaintext: str = "loopback", max_failures: int = 3) -> ServerConfig:
    local = Listen("127.0.0.1", 0)
    return ServerConfig(
        name="t", hostname="mail.example.com", domains=(Domain("example.com"),),
        auth=AuthSettings(plaintext=plaintext, failure_delay_seconds=0.2, failure_delay_max_seconds=1.0,
                          max_failures_per_session=max_failures),
        mailstore=MailstoreConfig(imap=local, imaps=local, pop3=local, pop3s=local, lmtp=local, http=local,
                                  data_dir=str(tmp / "mail"), min_free_bytes=0, max_line_length=8192),
        base_dir=str(tmp),
    )


def make_tls(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "tls.crt", tmp / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=mail.example.com", "-addext", "subjectAltName=DNS:mail.example.com,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


class SieveServer:
    def __init__(self, tmp: Path, *, tls_files: tuple[Path, Path] | None = None, **config) -> None:
        self.config = make_config(tmp, **config)
        h = passwords.hash_password(PASSWORD, passwords.stable_salt("t"))
        self.directory = StaticDirectory(Directory((
            MailboxEntry(ALICE, name="alice", password_hash=h, aliases=("postmaster@example.com",)),
            MailboxEntry(CAROL, name="carol", password_hash=h, suspended=True),
        ), self.config))
        self.data_dir = Path(self.config.mailstore.data_dir)
        self.metrics = Registry()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        tls = ServerTLS(*tls_files) if tls_files else None

        async def start():
            self.store = Store.from_config(self.config, self.directory)
            ms = self.config.mailstore
            self.ctx = MailstoreContext(config=self.config, directory=self.directory, store=self.store, tls=tls,
                                        throttle=LoginThrottle.from_settings(self.config.auth),
                                        metrics=self.metrics)
            self.ctx.managesieve_gate = ConnectionGate(ms.max_connections, 4)
            self.server = await serve_managesieve(self.ctx, Listen("127.0.0.1", 0))

        self.call(start())
        self.port = self.server.sockets[0].getsockname()[1]

    def call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def scripts_dir(self, address: str = ALICE) -> Path:
        return self.data_dir / address / "correo-sieve"

    def stop(self) -> None:
        async def stop():
            await shutdown(self.server)
            await self.store.close()
        try:
            self.call(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


def plain(user: str = ALICE, password: str = PASSWORD) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


class Raw:
    """A line-level client: send lines, read replies up to OK/NO/BYE."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.buf = b""
        self.greeting = self.response()

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise ConnectionError("closed")
        line, self.buf = self.buf.split(b"\r\n", 1)
        m = re.search(rb"\{(\d+)\}$", line)
        if m:  # a literal: its octets belong to this line
            size = int(m.group(1))
            while len(self.buf) < size:
                if not self._fill():
                    raise ConnectionError("closed")
            line += b"\r\n" + self.buf[:size]
            self.buf = self.buf[size:]
            rest, self.buf = self.buf.split(b"\r\n", 1) if b"\r\n" in self.buf else (self.buf, b"")
            line += rest
        return line

    def response(self) -> list[bytes]:
        """Lines up to and including the OK/NO/BYE line."""
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if re.match(rb"(?i)(OK|NO|BYE)\b", line):
                return lines

    def command(self, text: bytes | str) -> list[bytes]:
        data = text.encode() if isinstance(text, str) else text
        self.send(data + b"\r\n")
        return self.response()

    def login(self, user: str = ALICE, password: str = PASSWORD) -> list[bytes]:
        return self.command(f'AUTHENTICATE "PLAIN" "{plain(user, password)}"')

    def starttls(self) -> list[bytes]:
        assert self.command("STARTTLS")[-1].startswith(b"OK")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = ctx.wrap_socket(self.sock, server_hostname="mail.example.com")
        self.buf = b""
        return self.response()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def literal(data: bytes) -> bytes:
    return b"{%d+}\r\n" % len(data) + data


__all__ = ["ALICE", "CAROL", "PASSWORD", "Raw", "SieveServer", "literal", "make_tls", "plain", "replace"]
