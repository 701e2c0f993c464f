"""An SMTP / LMTP client connection, as the queue needs it.

Parsing (replies, EHLO keywords, data transparency) is pure and kept apart
from the I/O in :class:`Connection`.  :mod:`.outbound` decides whom to connect
to and what a failure means; this module only speaks the protocol: greeting,
EHLO/LHLO (HELO fallback), STARTTLS, AUTH PLAIN/LOGIN, one transaction with
per-recipient replies (RFC 2033 for LMTP), PIPELINING when offered (RFC 2920).

Every failure that is not a reply from the server (refused connection,
timeout, lost connection, TLS handshake) is a :class:`Failure` carrying a
synthesised reply such as ``451 4.4.1 connect to host[addr]:25: Connection
refused``, so that the rest of the queue handles one kind of thing.
"""
from __future__ import annotations

import asyncio
import base64
import re
import ssl
from dataclasses import dataclass

from .. import logs

log = logs.get(__name__)

MAX_REPLY_LINES = 100
READ_LIMIT = 64 * 1024
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s|$)")


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...] = ("",)

    @property
    def message(self) -> str:
        return " ".join(line.strip() for line in self.lines).strip()

    @property
    def text(self) -> str:
        """One line: ``451 4.7.1 greylisted``."""
        return f"{self.code} {self.message}".strip()

    @property
    def enhanced(self) -> str:
        """The RFC 3463 status code: the server's, or derived from the class."""
        m = _ENHANCED.match(self.lines[0].strip()) if self.lines else None
        if m and m.group(1) == str(self.code)[0]:
            return ".".join(m.groups())
        return f"{str(self.code)[0]}.0.0"

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 400

    @property
    def temporary(self) -> bool:
        return not self.ok and not self.permanent

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600

    def __str__(self) -> str:
        return self.text


def local_reply(code: int, enhanced: str, text: str) -> Reply:
    return Reply(code, (f"{enhanced} {text}",))


class Failure(Exception):
    """The conversation failed without a usable reply from the server."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.text)
        self.reply = reply


class ProtocolError(ValueError):
    pass


def parse_reply_line(line: bytes) -> tuple[int, bool, str]:
    """``b"250-PIPELINING\\r\\n"`` → (250, True, "PIPELINING"): code, more lines follow, text."""
    text = line.decode("utf-8", errors="replace").rstrip("\r\n")
    if len(text) < 3 or not text[:3].isdigit() or text[0] not in "2345" or (len(text) > 3 and text[3] not in " -"):
        raise ProtocolError(f"malformed reply line {text[:80]!r}")
    return int(text[:3]), len(text) > 3 and text[3] == "-", text[4:]


def parse_extensions(reply: Reply) -> dict[str, str]:
    """EHLO keywords (upper case) → parameters, from the lines after the first."""
    ext: dict[str, str] = {}
    for line in reply.lines[1:]:
        keyword, _, params = line.strip().partition(" ")
        if keyword:
            ext[keyword.upper()] = params.strip()
    return ext


def wire_data(data: bytes) -> bytes:
    """The DATA payload: CRLF line ends everywhere (a bare CR or LF becomes
    CRLF, so nothing can be smuggled past the end of data), leading dots
    doubled (RFC 5321 4.5.2), and the final ``.``."""
    data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\r\n.", b"\r\n..")
    return data + b".\r\n"


def needs_smtputf8(*addresses: str) -> bool:
    return any(not a.isascii() for a in addresses)


class Connection:
    """One client connection.  Methods raise :class:`Failure` when the
    connection is unusable; replies from the server are returned, not raised."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, host: str, addr: str,
                 port: int, timeout: float) -> None:
        self.reader, self.writer = reader, writer
        self.host, self.addr, self.port = host, addr, port
        self.timeout = timeout
        self.extensions: dict[str, str] = {}
        self.greeting: Reply | None = None
        self.tls = False
        self.lmtp = False
        self.closed = False
        self.payload_sent = False  # the last transaction got as far as sending the message

    @property
    def server(self) -> str:
        """How attempts name this server: ``mx1.example.org[192.0.2.1]:25``."""
        addr = f"[{self.addr}]" if self.addr != self.host else ""
        return f"{self.host}{addr}:{self.port}"

    @classmethod
    async def open(cls, host: str, addr: str, port: int, *, connect_timeout: float, timeout: float,
                   tls: ssl.SSLContext | None = None) -> "Connection":
        """Connect to ``addr`` (``host`` is the name) and read the greeting."""
        where = f"{host}[{addr}]:{port}" if host != addr else f"{addr}:{port}"
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(addr, port, limit=READ_LIMIT, ssl=tls,
                                        server_hostname=(host if tls else None)),
                connect_timeout)
        except asyncio.TimeoutError:
            raise Failure(local_reply(451, "4.4.1", f"connect to {where}: timed out")) from None
        except ssl.SSLError as exc:
            raise Failure(local_reply(451, "4.7.5", f"TLS with {where} failed: {exc.reason or exc}")) from None
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise Failure(local_reply(451, "4.4.1", f"connect to {where}: {reason}")) from None
        conn = cls(reader, writer, host=host, addr=addr, port=port, timeout=timeout)
        conn.tls = tls is not None
        conn.greeting = await conn.read_reply()
        return conn

    # -- primitives -------------------------------------------------------
    def _lost(self, what: str) -> Failure:
        self.abort()
        return Failure(local_reply(451, "4.4.2", f"{what} with {self.server}"))

    async def read_reply(self) -> Reply:
        return (await self.read_replies(1))[0]

    async def read_replies(self, n: int) -> list[Reply]:
        """The next ``n`` replies (of a pipelined group), within one timeout."""
        try:
            async with asyncio.timeout(self.timeout):  # one timer, not a task per line like wait_for
                return [await self._reply() for _ in range(n)]
        except asyncio.TimeoutError:
            raise self._lost("timeout waiting for a reply") from None

    async def _reply(self) -> Reply:
        lines: list[str] = []
        code = 0
        while True:
            try:
                raw = await self.reader.readline()
            except (OSError, ValueError, asyncio.LimitOverrunError):
                raise self._lost("connection lost") from None
            if not raw or not raw.endswith(b"\n"):
                raise self._lost("connection closed by the server")
            try:
                c, more, text = parse_reply_line(raw)
            except ProtocolError:
                raise self._lost("malformed reply") from None
            if code and c != code:
                raise self._lost("inconsistent multi-line reply")
            code = c
            lines.append(text)
            if not more:
                return Reply(code, tuple(lines))
            if len(lines) > MAX_REPLY_LINES:
                raise self._lost("over-long reply")

    async def send(self, data: bytes) -> None:
        if self.closed:
            raise Failure(local_reply(451, "4.4.2", f"connection to {self.server} already closed"))
        try:
            self.writer.write(data)
            async with asyncio.timeout(self.timeout):
                await self.writer.drain()
        except asyncio.TimeoutError:
            raise self._lost("timeout sending") from None
        except (OSError, RuntimeError):
            raise self._lost("connection lost while sending") from None

    def _line(self, command: str) -> bytes:
        if "\r" in command or "\n" in command:
            raise ValueError("line break in an SMTP command")
        return command.encode("utf-8") + b"\r\n"

    async def command(self, command: str) -> Reply:
        await self.send(self._line(command))
        return await self.read_reply()

    # -- session ----------------------------------------------------------
    async def hello(self, name: str, *, lmtp: bool = False) -> Reply:
        """EHLO (LHLO for LMTP); HELO when an old server refuses EHLO."""
        self.lmtp = lmtp
        reply = await self.command(f"{'LHLO' if lmtp else 'EHLO'} {name}")
        if reply.ok:
            self.extensions = parse_extensions(reply)
        elif not lmtp and reply.code in (500, 501, 502, 504, 550):
            reply = await self.command(f"HELO {name}")
            self.extensions = {}
        return reply

    async def starttls(self, context: ssl.SSLContext, name: str, server_hostname: str) -> Reply:
        """STARTTLS, the handshake, and EHLO again (RFC 3207).  Returns the
        STARTTLS reply when the server refused it; raises Failure when the
        handshake failed (the connection is then unusable)."""
        reply = await self.command("STARTTLS")
        if not reply.ok:
            return reply
        try:
            await asyncio.wait_for(self.writer.start_tls(context, server_hostname=server_hostname), self.timeout)
        except (ssl.SSLError, OSError, asyncio.TimeoutError, ConnectionError) as exc:
            self.abort()
            raise Failure(local_reply(451, "4.7.5", f"TLS handshake with {self.server} failed: {exc}")) from None
        self.tls = True
        self.extensions = {}
        return await self.hello(name, lmtp=self.lmtp)

    def auth_mechanisms(self) -> set[str]:
        return set(self.extensions.get("AUTH", "").upper().split())

    async def auth(self, username: str, password: str) -> Reply:
        """AUTH PLAIN, else LOGIN (whichever the server offers)."""
        mechs = self.auth_mechanisms()
        if "PLAIN" in mechs or not mechs:
            token = base64.b64encode(b"\0" + username.encode() + b"\0" + password.encode()).decode()
            return await self.command(f"AUTH PLAIN {token}")
        if "LOGIN" in mechs:
            reply = await self.command("AUTH LOGIN")
            if reply.code != 334:
                return reply
            reply = await self.command(base64.b64encode(username.encode()).decode())
            if reply.code != 334:
                return reply
            return await self.command(base64.b64encode(password.encode()).decode())
        return local_reply(535, "5.7.8", f"{self.server} offers no AUTH mechanism correo speaks ({' '.join(sorted(mechs))})")

    async def transaction(self, sender: str, recipients: list[str], payload: bytes, *, size: int,
                          smtputf8: bool = False, body8: bool = False) -> list[Reply]:
        """One message (``payload`` from :func:`wire_data`): one reply per
        recipient, the one that decides its fate."""
        n = len(recipients)
        self.payload_sent = False
        limit = self.extensions.get("SIZE", "")
        if limit.isdigit() and int(limit) and size > int(limit):
            return [local_reply(552, "5.3.4", f"message is {size} bytes, {self.server} accepts at most {limit}")] * n
        if (needs_smtputf8(sender, *recipients)) and "SMTPUTF8" not in self.extensions:
            return [local_reply(553, "5.6.7", f"{self.server} does not support SMTPUTF8 (internationalised addresses)")] * n
        params = []
        if "SIZE" in self.extensions:
            params.append(f"SIZE={size}")
        if body8 and "8BITMIME" in self.extensions:
            params.append("BODY=8BITMIME")
        if smtputf8 and "SMTPUTF8" in self.extensions:
            params.append("SMTPUTF8")
        mail = " ".join([f"MAIL FROM:<{sender}>", *params])
        rcpt_lines = [f"RCPT TO:<{r}>" for r in recipients]
        data_reply: Reply | None = None
        if "PIPELINING" in self.extensions:
            # RFC 2920: DATA may end the group; the message waits for its 354.
            await self.send(b"".join(self._line(c) for c in [mail, *rcpt_lines, "DATA"]))
            mail_reply, *rcpt_replies, data_reply = await self.read_replies(n + 2)
        else:
            mail_reply = await self.command(mail)
            rcpt_replies = [await self.command(c) for c in rcpt_lines] if mail_reply.ok else []
        if not mail_reply.ok:
            await self._end_refused(data_reply)
            return [mail_reply] * n
        accepted = [i for i, r in enumerate(rcpt_replies) if r.ok]
        results: list[Reply] = list(rcpt_replies)
        if not accepted:
            await self._end_refused(data_reply)
            return results
        if data_reply is None:
            data_reply = await self.command("DATA")
        if data_reply.code != 354:
            for i in accepted:
                results[i] = data_reply
            await self._rset()
            return results
        self.payload_sent = True
        await self.send(payload)
        if self.lmtp:  # RFC 2033: one reply per accepted recipient, in order
            for i, reply in zip(accepted, await self.read_replies(len(accepted))):
                results[i] = reply
        else:
            final = await self.read_reply()
            for i in accepted:
                results[i] = final
        return results

    async def _end_refused(self, data_reply: Reply | None) -> None:
        """Nothing to send after all: RSET, or, when a pipelined DATA got
        ``354`` anyway, drop the connection (no message was sent)."""
        if data_reply is not None and data_reply.code == 354:
            self.abort()
            return
        await self._rset()

    async def _rset(self) -> None:
        try:
            await self.command("RSET")
        except Failure:
            pass

    async def quit(self) -> None:
        if self.closed:
            return
        try:
            await asyncio.wait_for(self.command("QUIT"), min(self.timeout, 5.0))
        except (Failure, asyncio.TimeoutError):
            pass
        self.abort()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.writer.close()
            except Exception:  # noqa: BLE001 - closing a broken transport
                pass
