"""A load of SMTP clients that behave like real MTAs: each message is sent
until a ``250`` acknowledges it, and a refusal with ``4xx`` or a lost
connection means "try again" (on a new connection).  Used by the crash
tests (and usable from a shell: ``python tests/hardening/loadsend.py PORT``).

Every message has its own Message-ID (``<load-N@loadsend.test>``), so that
what arrived can be counted per message afterwards (:func:`count_copies`)."""
from __future__ import annotations

import asyncio
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

_MESSAGE_ID = re.compile(rb"^message-id:\s*<(load-\d+)@loadsend\.test>", re.I | re.M)


def message(n: int, recipient: str) -> bytes:
    return (f"From: <sender@loadsend.test>\r\nTo: <{recipient}>\r\nSubject: load {n}\r\n"
            f"Message-ID: <load-{n}@loadsend.test>\r\nDate: Fri, 04 Dec 2026 12:00:00 +0000\r\n\r\n"
            + f"message {n}\r\n" * 20).encode()


@dataclass
class Load:
    port: int
    total: int
    recipients: tuple[str, ...]
    clients: int = 8
    acked: set[int] = field(default_factory=set)
    attempts: int = 0
    failures: int = 0  # attempts that ended without a 250 (and were repeated)
    _next: int = 0

    def take(self) -> int | None:
        if self._next >= self.total:
            return None
        self._next += 1
        return self._next - 1

    async def run(self, deadline: float = 600.0) -> None:
        await asyncio.wait_for(asyncio.gather(*(self._client() for _ in range(self.clients))), deadline)

    async def _client(self) -> None:
        conn = None
        while (n := self.take()) is not None:
            while True:
                self.attempts += 1
                try:
                    if conn is None:
                        conn = await _Conn.open(self.port)
                    if await conn.send(n, self.recipients[n % len(self.recipients)]):
                        self.acked.add(n)
                        break
                    await conn.close()
                    conn = None
                except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
                    if conn is not None:
                        await conn.close()
                    conn = None
                self.failures += 1
                await asyncio.sleep(0.2)
        if conn is not None:
            await conn.close()


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> "_Conn":
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        conn = cls(reader, writer)
        if await conn.reply() != 220 or await conn.cmd("EHLO loadsend.test") != 250:
            raise ValueError("no greeting")
        return conn

    async def reply(self) -> int:
        while True:
            line = await asyncio.wait_for(self.reader.readline(), 60)
            if not line:
                raise asyncio.IncompleteReadError(b"", None)
            if line[3:4] != b"-":
                return int(line[:3])

    async def cmd(self, line: str) -> int:
        self.writer.write(line.encode() + b"\r\n")
        return await self.reply()

    async def send(self, n: int, recipient: str) -> bool:
        """One transaction; True when the message was acknowledged."""
        if await self.cmd("MAIL FROM:<sender@loadsend.test>") != 250:
            return False
        if await self.cmd(f"RCPT TO:<{recipient}>") != 250:
            await self.cmd("RSET")
            return False
        if await self.cmd("DATA") != 354:
            return False
        self.writer.write(message(n, recipient) + b".\r\n")
        return await self.reply() == 250

    async def close(self) -> None:
        try:
            self.writer.write(b"QUIT\r\n")
            self.writer.close()
        except Exception:  # noqa: BLE001 - already gone
            pass


def count_copies(maildirs: list[Path]) -> dict[int, int]:
    """Message number → copies found in these Maildir folders."""
    copies: dict[int, int] = {}
    for folder in maildirs:
        for sub in ("new", "cur"):
            for path in (folder / sub).glob("*") if (folder / sub).is_dir() else ():
                try:
                    head = path.read_bytes()[:2048]
                except FileNotFoundError:
                    continue
                m = _MESSAGE_ID.search(head)
                if m:
                    n = int(m.group(1)[5:])
                    copies[n] = copies.get(n, 0) + 1
    return copies


if __name__ == "__main__":
    port, total = int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1200
    load = Load(port, total, ("alice@example.com", "bob@example.com"))
    asyncio.run(load.run())
    print(f"acknowledged {len(load.acked)} of {total}; {load.attempts} attempts, {load.failures} repeated")
