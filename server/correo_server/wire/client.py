"""One SMTP and LMTP client connection, for every hop correo makes.

The relay hands messages to the queue over LMTP (:mod:`correo_server.relay.handoff`,
which keeps a pool of these), the queue delivers to the mailstore over LMTP
and to remote MX hosts and smarthosts over SMTP (:mod:`correo_server.queue.outbound`).
All of them use :class:`Connection`: the greeting, EHLO/LHLO (HELO when an
old server refuses EHLO), STARTTLS (RFC 3207), AUTH PLAIN/LOGIN (RFC 4954),
and one transaction at a time with PIPELINING (RFC 2920) when the server
offers it: ``MAIL``, the ``RCPT`` commands and ``DATA`` in one write, the
message after the ``354``, then one reply per accepted recipient for LMTP
(RFC 2033) or one for all for SMTP.

The connection is an :class:`asyncio.Protocol`: what the server sends is
split into replies as it arrives (:func:`~.replies.parse_reply_line`), and
a caller waiting for the replies of a pipelined group is woken once, when
the last of them is in, within one timeout for the group.

Every failure that is not a reply from the server (refused connection,
timeout, lost connection, garbage, TLS handshake) raises :class:`Failure`
carrying a made-up reply such as ``451 4.4.1 connect to host[addr]:25:
Connection refused`` and a ``kind`` (``unreachable``, ``timeout``,
``protocol``, ``tls``), so that callers handle one kind of thing.
"""
from __future__ import annotations

import asyncio
import base64
import re
import ssl
from collections import deque
from dataclasses import dataclass

from .server import ATOMIC
from .replies import (MAX_REPLY_LINES, ProtocolError, Reply, local_reply, parse_extensions,
                      parse_reply_line)

READ_LIMIT = 64 * 1024  # octets of one reply line, at most
# Single-line replies as read, by their octets: most replies are the same few
# lines (``250 2.1.0 Ok``, ``354 ...``), and a Reply is immutable, so a line
# seen before is not parsed again (~3 us a reply).  Short lines only, and
# emptied when full: a server sending a new line every time costs little.
_SEEN: dict[bytes, Reply] = {}
_SEEN_MAX = 512
_SEEN_LINE = 160  # octets
_QUEUED_AS = re.compile(r"queued as\s+<?([A-Za-z0-9._@:+-]+)>?", re.I)


class Failure(Exception):
    """The conversation failed without a usable reply from the server."""

    def __init__(self, reply: Reply, kind: str = "unreachable") -> None:
        super().__init__(str(reply))
        self.reply = reply
        self.kind = kind  # "unreachable", "timeout", "protocol", "tls"


def needs_smtputf8(*addresses: str) -> bool:
    return any(not a.isascii() for a in addresses)


def xtext(value: str) -> str:
    """RFC 3461 xtext, as XFORWARD attribute values are written."""
    return "".join(ch if "!" <= ch <= "~" and ch not in "+=" else "".join(f"+{b:02X}" for b in ch.encode())
                   for ch in value)


@dataclass
class Outcome:
    """What a server said about one message."""

    recipients: list[str]
    replies: list[Reply]  # one per recipient, the one that decides its fate
    stage: str  # "mail", "rcpt" or "data": where the transaction ended

    @property
    def queued_as(self) -> str | None:
        """The id in a ``250 ... queued as ID`` reply, if any."""
        for reply in self.replies:
            m = _QUEUED_AS.search(reply.text)
            if m:
                return m.group(1)
        return None


class _Closed(Exception):
    pass


class _ReplyReader(asyncio.Protocol):
    """Splits what the server sends into replies; wakes one waiter when as
    many replies as it wants are in."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.replies: deque[Reply] = deque()
        self.lines: list[str] = []
        self.code = 0
        self.waiter: asyncio.Future | None = None
        self.want = 0
        self.closed = False
        self.error: str | None = None  # why the stream is unusable: "protocol" problems
        self.paused = False
        self.drain_waiter: asyncio.Future | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        start = 0
        find = buf.find
        while self.error is None:
            end = find(b"\n", start)
            if end < 0:
                break
            line = bytes(buf[start:end + 1])
            start = end + 1
            if not self.lines:
                reply = _SEEN.get(line)
                if reply is not None:
                    self.replies.append(reply)
                    continue
            try:
                code, more, text = parse_reply_line(line)
            except ProtocolError:
                self._fail("malformed reply")
                break
            if self.code and code != self.code:
                self._fail("inconsistent multi-line reply")
                break
            self.code = code
            self.lines.append(text)
            if not more:
                reply = Reply.parse(code, self.lines)
                if len(self.lines) == 1 and len(line) <= _SEEN_LINE:
                    if len(_SEEN) >= _SEEN_MAX:
                        _SEEN.clear()
                    _SEEN[line] = reply
                self.replies.append(reply)
                self.lines = []
                self.code = 0
            elif len(self.lines) > MAX_REPLY_LINES:
                self._fail("over-long reply")
        if start:
            del buf[:start]
        if len(buf) > READ_LIMIT and self.error is None:
            self._fail("over-long reply line")
        waiter = self.waiter
        if waiter is not None and not waiter.done() and (len(self.replies) >= self.want or self.error):
            waiter.set_result(None)

    def _fail(self, what: str) -> None:
        self.error = what
        if self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for fut in (self.waiter, self.drain_waiter):
            if fut is not None and not fut.done():
                fut.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_result(None)


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class Connection:
    """One client connection.  Methods raise :class:`Failure` when the
    connection is unusable; replies from the server are returned, not raised."""

    def __init__(self, transport: asyncio.Transport, reader: _ReplyReader, *, host: str, addr: str, port: int,
                 timeout: float) -> None:
        self.transport = transport
        self._r = reader
        self.loop = reader.loop
        self.host, self.addr, self.port = host, addr, port
        self.timeout = timeout
        self.extensions: dict[str, str] = {}
        self.greeting: Reply | None = None
        self.tls = False
        self.lmtp = False
        self.closed = False
        self.payload_sent = False  # the last transaction got as far as sending the message
        self.last_used = 0.0  # for pools

    @property
    def server(self) -> str:
        """How attempts name this server: ``mx1.example.org[192.0.2.1]:25``."""
        addr = f"[{self.addr}]" if self.addr != self.host else ""
        return f"{self.host}{addr}:{self.port}"

    @property
    def alive(self) -> bool:
        return not self.closed and not self._r.closed and not self.transport.is_closing()

    @classmethod
    async def open(cls, host: str, addr: str, port: int, *, connect_timeout: float, timeout: float,
                   tls: ssl.SSLContext | None = None) -> "Connection":
        """Connect to ``addr`` (``host`` is the name) and read the greeting
        (in :attr:`greeting`; not checked here)."""
        where = f"{host}[{addr}]:{port}" if host != addr else f"{addr}:{port}"
        loop = asyncio.get_running_loop()
        reader = _ReplyReader(loop)
        try:
            async with asyncio.timeout(connect_timeout):
                transport, _ = await loop.create_connection(lambda: reader, addr, port, ssl=tls,
                                                            server_hostname=(host if tls else None))
        except TimeoutError:
            raise Failure(local_reply(451, "4.4.1", f"connect to {where}: timed out"), "timeout") from None
        except ssl.SSLError as exc:
            raise Failure(local_reply(451, "4.7.5", f"TLS with {where} failed: {exc.reason or exc}"), "tls") from None
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise Failure(local_reply(451, "4.4.1", f"connect to {where}: {reason}")) from None
        conn = cls(transport, reader, host=host, addr=addr, port=port, timeout=timeout)  # type: ignore[arg-type]
        conn.tls = tls is not None
        conn.greeting = await conn.read_reply()
        return conn

    # -- primitives -------------------------------------------------------
    def _lost(self, what: str, kind: str = "unreachable") -> Failure:
        self.abort()
        return Failure(local_reply(451, "4.4.2", f"{what} with {self.server}"), kind)

    async def read_reply(self) -> Reply:
        return (await self.read_replies(1))[0]

    async def read_replies(self, n: int) -> list[Reply]:
        """The next ``n`` replies (of a pipelined group), within one timeout."""
        r = self._r
        if len(r.replies) < n and r.error is None and not r.closed:
            fut = self.loop.create_future()
            r.waiter, r.want = fut, n
            timer = self.loop.call_later(self.timeout, _expire, fut)
            try:
                await fut
            except TimeoutError:
                raise self._lost("timeout waiting for a reply", "timeout") from None
            finally:
                timer.cancel()
                r.waiter = None
        if len(r.replies) < n:
            if r.error is not None:
                raise self._lost(r.error, "protocol")
            raise self._lost("connection closed by the server")
        return [r.replies.popleft() for _ in range(n)]

    async def send(self, data: bytes | list[bytes]) -> None:
        if self.closed or self._r.closed:
            raise self._lost("connection already closed")
        if isinstance(data, list):
            self.transport.writelines(data)
        else:
            self.transport.write(data)
        r = self._r
        if r.paused and not r.closed:
            fut = self.loop.create_future()
            r.drain_waiter = fut
            timer = self.loop.call_later(self.timeout, _expire, fut)
            try:
                await fut
            except TimeoutError:
                raise self._lost("timeout sending", "timeout") from None
            finally:
                timer.cancel()
                r.drain_waiter = None
        if r.closed:
            raise self._lost("connection lost while sending")

    @staticmethod
    def line(command: str) -> bytes:
        if "\r" in command or "\n" in command:
            raise ValueError("line break in an SMTP command")
        return command.encode("utf-8") + b"\r\n"

    async def command(self, command: str) -> Reply:
        await self.send(self.line(command))
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
            async with asyncio.timeout(self.timeout):
                transport = await self.loop.start_tls(self.transport, self._r, context,
                                                      server_hostname=server_hostname)
        except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as exc:
            self.abort()
            raise Failure(local_reply(451, "4.7.5", f"TLS handshake with {self.server} failed: {exc}"), "tls") from None
        if transport is None:
            raise self._lost("connection lost during the TLS handshake")
        self.transport = transport
        self._r.transport = transport
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
        return local_reply(535, "5.7.8", f"{self.server} offers no AUTH mechanism correo speaks "
                                         f"({' '.join(sorted(mechs))})")

    async def transaction(self, sender: str, recipients: list[str], payload: bytes | list[bytes], *, size: int,
                          smtputf8: bool = False, body8: bool = False, ident: str | None = None,
                          all_or_nothing: bool = False, mail_params: tuple[str, ...] = (),
                          rcpt_params: list[str] | None = None, content: bytes | None = None) -> Outcome:
        """One message: ``payload`` is its DATA section as sent, end marker
        included (:func:`~.data.wire_data`, :func:`~.data.data_lines`).
        Returns one reply per recipient, the one that decides its fate.

        ``all_or_nothing``: when the server refuses any recipient, no data
        is sent (the transaction is reset), so that it keeps nothing.
        ``ident``: the message's id here, passed on with XFORWARD IDENT when
        the server offers it (Postfix's extension; it logs the id).
        ``mail_params`` go on the MAIL command, ``rcpt_params`` (one per
        recipient, "" for none) on each RCPT: the caller checks that the
        server offers them (correo's ``XDELIVERY-KEY``, ``XVERDICT``, ``XOWNER``).

        ``content``: the message as :func:`~.data.crlf_message` (or, in
        pieces, :func:`~.data.chunk_pieces`) makes it: the same octets the
        server gets from ``payload``.  With it, a server that offers
        CHUNKING and PIPELINING gets MAIL, RCPT, ``BDAT <size> LAST`` and the
        message in one write, and every reply is read at once (one round
        trip, RFC 3030); the message goes out before the recipients are
        known to be accepted, so ``all_or_nothing`` takes a server that also
        offers correo's ``XATOMIC`` (:mod:`.server`), else DATA is used.
        ``payload_sent`` is set once the server has answered the commands
        of such a transaction."""
        n = len(recipients)
        self.payload_sent = False
        ext = self.extensions
        limit = ext.get("SIZE", "")
        if limit.isdigit() and int(limit) and size > int(limit):
            reply = local_reply(552, "5.3.4", f"message is {size} bytes, {self.server} accepts at most {limit}")
            return Outcome(recipients, [reply] * n, "mail")
        if needs_smtputf8(sender, *recipients) and "SMTPUTF8" not in ext:
            reply = local_reply(553, "5.6.7", f"{self.server} does not support SMTPUTF8 (internationalised addresses)")
            return Outcome(recipients, [reply] * n, "mail")
        params = []
        if smtputf8 and "SMTPUTF8" in ext:
            params.append("SMTPUTF8")
        if body8 and "8BITMIME" in ext:
            params.append("BODY=8BITMIME")
        if "SIZE" in ext:
            params.append(f"SIZE={size}")
        mail = " ".join([f"MAIL FROM:<{sender}>", *params, *mail_params])
        group = [mail, *(f"RCPT TO:<{r}>" if not rcpt_params or not rcpt_params[i] else
                         f"RCPT TO:<{r}> {rcpt_params[i]}" for i, r in enumerate(recipients))]
        xforward = bool(ident) and "IDENT" in ext.get("XFORWARD", "").upper().split()
        if xforward:
            group.insert(0, f"XFORWARD IDENT={xtext(ident or '')}")
        if (content is not None and "CHUNKING" in ext and "PIPELINING" in ext
                and (not all_or_nothing or ATOMIC in ext)):
            if all_or_nothing:
                group[1 if xforward else 0] += f" {ATOMIC}"
            return await self._chunked(group, xforward, recipients, content, all_or_nothing)
        data_reply: Reply | None = None
        if "PIPELINING" in ext:
            # RFC 2920: DATA may end the group; the message waits for its 354.
            group.append("DATA")
            await self.send(b"".join(map(self.line, group)))
            replies = await self.read_replies(len(group))
            data_reply = replies.pop()
        else:
            replies = []
            for command in group:
                replies.append(await self.command(command))
                if command is mail and not replies[-1].ok:
                    break
        if xforward:
            replies.pop(0)  # its reply changes nothing
        mail_reply, rcpt_replies = replies[0], replies[1:]
        if not mail_reply.ok:
            await self._end_refused(data_reply)
            return Outcome(recipients, [mail_reply] * n, "mail")
        accepted = [i for i, r in enumerate(rcpt_replies) if r.ok]
        results = list(rcpt_replies)
        if not accepted or (all_or_nothing and len(accepted) < n):
            await self._end_refused(data_reply)
            return Outcome(recipients, results, "rcpt")
        if data_reply is None:
            data_reply = await self.command("DATA")
        if data_reply.code != 354:
            for i in accepted:
                results[i] = data_reply
            await self.rset()
            return Outcome(recipients, results, "data")
        self.payload_sent = True
        await self.send(payload)
        return Outcome(recipients, await self._final_replies(accepted, results), "data")

    async def _chunked(self, group: list[str], xforward: bool, recipients: list[str], content: bytes | list[bytes],
                       all_or_nothing: bool) -> Outcome:
        """The transaction in one write with ``BDAT <size> LAST`` (see :meth:`transaction`)."""
        n = len(recipients)
        pieces = [content] if isinstance(content, bytes) else content
        size = sum(map(len, pieces))
        await self.send([b"".join(map(self.line, group)), b"BDAT %d LAST\r\n" % size, *pieces])
        replies = await self.read_replies(len(group))
        self.payload_sent = True
        if xforward:
            replies.pop(0)
        mail_reply, rcpt_replies = replies[0], replies[1:]
        results = list(rcpt_replies)
        accepted = [i for i, r in enumerate(rcpt_replies) if r.ok] if mail_reply.ok else []
        if not accepted:  # the BDAT is refused too (no transaction, or no recipient)
            await self.read_reply()
            await self.rset()
            return Outcome(recipients, [mail_reply] * n, "mail") if not mail_reply.ok else \
                Outcome(recipients, results, "rcpt")
        if all_or_nothing and len(accepted) < n:  # XATOMIC: refused for the accepted ones too, nothing kept
            await self._final_replies(accepted, list(results))
            return Outcome(recipients, results, "rcpt")
        return Outcome(recipients, await self._final_replies(accepted, results), "data")

    async def _final_replies(self, accepted: list[int], results: list[Reply]) -> list[Reply]:
        """The replies to the message, into ``results`` at the accepted
        recipients: one each for LMTP (RFC 2033, in order), one for all for SMTP."""
        if self.lmtp:
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
        await self.rset()

    async def rset(self) -> None:
        """End a transaction; a connection that cannot is dropped."""
        try:
            reply = await self.command("RSET")
        except Failure:
            return
        if reply.code != 250:
            self.abort()

    async def quit(self) -> None:
        if self.closed:
            return
        timeout, self.timeout = self.timeout, min(self.timeout, 5.0)
        try:
            await self.command("QUIT")
        except Failure:
            pass
        finally:
            self.timeout = timeout
        self.abort()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.transport.close()
            except Exception:  # noqa: BLE001 - closing a broken transport
                pass
