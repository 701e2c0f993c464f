"""Helpers for the relay's tests (a uniquely named module, so that test
files can import it whatever other conftest.py files exist): the LMTP sink
that plays the queue, and clients."""
from __future__ import annotations

import asyncio
import dataclasses
import smtplib
import ssl
from typing import Callable

from aiosmtpd.lmtp import LMTP

HOSTNAME = "mx.example.com"
PASSWORDS = {"alice@example.com": "alice-secret", "bob@example.com": "bob-secret",
             "carol@example.com": "carol-secret", "δοκιμή@example.com": "utf8-secret"}

# -- the LMTP sink playing the queue -----------------------------------------------
@dataclasses.dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    mail_options: list[str]


class LMTPSink:
    """A queue stand-in: records what arrives; ``rcpt_reply``/``data_reply``
    (callables recipient → reply or None) make it refuse, ``delay`` makes it
    slow, ``stop()`` takes it down (open connections included).  It offers
    PIPELINING as an LMTP server must (RFC 2033), unless ``pipelining`` is
    False; ``commands`` lists the MAIL, RCPT and completed DATA it saw."""

    def __init__(self) -> None:
        self.pipelining = True
        self.commands: list[str] = []
        self.messages: list[Received] = []
        self.rcpt_reply: Callable[[str], str | None] | None = None
        self.data_reply: Callable[[str], str | None] | None = None
        self.delay = 0.0
        self.connections = 0
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._protocols: list[LMTP] = []
        self._count = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        extra = ["250-PIPELINING", "250-ENHANCEDSTATUSCODES"] if self.pipelining else []
        return [responses[0], *extra, *responses[1:]]

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.commands.append("MAIL")
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.commands.append("RCPT")
        reply = self.rcpt_reply(address) if self.rcpt_reply else None
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.commands.append("DATA-END")
        if self.delay:
            await asyncio.sleep(self.delay)
        replies, accepted = [], []
        for rcpt in envelope.rcpt_tos:
            reply = self.data_reply(rcpt) if self.data_reply else None
            if reply is None:
                self._count += 1
                reply = f"250 2.0.0 <{rcpt}> Ok: queued as Q{self._count:04d}"
                accepted.append(rcpt)
            replies.append(reply)
        if accepted:
            self.messages.append(Received(envelope.mail_from, accepted, envelope.original_content,
                                          list(envelope.mail_options)))
        return "\r\n".join(replies)

    def _factory(self):
        self.connections += 1
        proto = LMTP(self, enable_SMTPUTF8=True, hostname="queue.test", loop=asyncio.get_running_loop())
        self._protocols.append(proto)
        return proto

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._factory, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for proto in self._protocols:
                if proto.transport is not None:
                    proto.transport.close()
            self._protocols.clear()
            await asyncio.sleep(0)
            self._server = None


# -- clients -------------------------------------------------------------------------
def client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def in_thread(fn, *args, **kwargs):
    """Run blocking client code (smtplib) without blocking the servers' loop."""
    return await asyncio.to_thread(fn, *args, **kwargs)


def smtp_client(port: int, *, ehlo: str = "client.test") -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", port, local_hostname=ehlo, timeout=10)
    client.ehlo()
    return client


class RawClient:
    """Line-level SMTP: write exact bytes, read whole replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, *, greet: bool = True, tls: bool = False) -> "RawClient":
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_tls() if tls else None)
        client = cls(reader, writer)
        if greet:
            code, _ = await client.reply()
            assert code == 220
        return client

    async def reply(self, timeout: float = 10) -> tuple[int, list[str]]:
        lines = []
        while True:
            raw = await asyncio.wait_for(self.reader.readline(), timeout)
            if not raw:
                return 0, lines  # connection closed
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(line)
            if len(line) < 4 or line[3] == " ":
                return int(line[:3]), lines

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def cmd(self, line: str | bytes) -> tuple[int, list[str]]:
        await self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return await self.reply()

    async def closed(self, timeout: float = 5) -> bool:
        try:
            data = await asyncio.wait_for(self.reader.read(), timeout)
        except (ConnectionError, asyncio.TimeoutError):
            return False
        return data == b""

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass
