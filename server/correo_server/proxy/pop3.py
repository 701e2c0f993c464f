"""POP3 before login, at the proxy (RFC 1939, 2449, 5034, 2595): CAPA, STLS,
USER/PASS, AUTH PLAIN, QUIT; then the shard's session, relayed.  Replies
are the mailstore's own words; ``-ERR [SYS/TEMP]`` when the mailbox's shard
is down."""
from __future__ import annotations

import asyncio
import ssl

from .. import logs
from ..login import SaslError, decode_sasl_plain
from . import lines, relay
from .context import ProxyContext

log = logs.get(__name__)

PLAINTEXT_REFUSED = "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."


class Session:
    def __init__(self, ctx: ProxyContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 peer: str, tls: bool) -> None:
        self.ctx, self.reader, self.writer, self.peer, self.tls = ctx, reader, writer, peer, tls
        self.failures = 0
        self.relaying = False  # logged in, bytes relayed to the shard
        self.user: str | None = None
        self.log = log.bind(peer=peer, protocol="pop3")

    def send(self, text: str) -> None:
        self.writer.write(text.encode("utf-8") + b"\r\n")

    def allowed(self) -> bool:
        return self.ctx.plaintext_allowed(self.peer, self.tls)

    async def run(self) -> None:
        self.send(f"+OK {self.ctx.config.hostname} correo POP3 ready.")
        await self.writer.drain()
        while True:
            try:
                line = await lines.read_line(self.reader)
            except lines.TooLong:
                self.send("-ERR Line too long.")
                await self.writer.drain()
                return
            if not line:
                return
            words = line.rstrip(b"\r\n").decode("utf-8", "replace").split(" ")
            command, args = words[0].upper(), [w for w in words[1:] if w]
            if command == "CAPA":
                caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
                if self.allowed():
                    caps += ["USER", "SASL PLAIN"]
                if self.ctx.tls is not None and not self.tls:
                    caps.append("STLS")
                self.send("+OK Capability list follows")
                for cap in caps:
                    self.send(cap)
                self.send(".")
            elif command == "QUIT":
                self.send("+OK Bye.")
                await self.writer.drain()
                return
            elif command == "STLS":
                if self.tls or self.ctx.tls is None:
                    self.send(f"-ERR TLS is {'already active' if self.tls else 'not available'}.")
                else:
                    self.send("+OK Begin TLS negotiation.")
                    await self.writer.drain()
                    buffered = getattr(self.reader, "_buffer", None)
                    if buffered:
                        buffered.clear()
                    try:
                        await self.writer.start_tls(self.ctx.tls.context, ssl_handshake_timeout=30)
                    except (ssl.SSLError, ConnectionError, OSError, TimeoutError) as exc:
                        self.log.info("pop3_tls_failed", error=str(exc))
                        return
                    self.tls, self.user = True, None
                    continue
            elif command == "USER":
                if not self.allowed():
                    self.send(PLAINTEXT_REFUSED)
                elif not args:
                    self.send("-ERR USER needs a name.")
                else:
                    self.user = " ".join(words[1:])
                    self.send("+OK Send PASS.")
            elif command == "PASS":
                if self.user is None:
                    self.send("-ERR Send USER first.")
                elif not self.allowed():
                    self.send(PLAINTEXT_REFUSED)
                else:
                    user, self.user = self.user, None
                    password = line.rstrip(b"\r\n").decode("utf-8", "replace")[5:]
                    if await self.login(user, password) in ("relayed", "close"):
                        return
                    continue
            elif command == "AUTH":
                if not args:
                    self.send("+OK Supported SASL mechanisms follow")
                    if self.allowed():
                        self.send("PLAIN")
                    self.send(".")
                elif args[0].upper() != "PLAIN":
                    self.send("-ERR Unsupported authentication mechanism.")
                elif not self.allowed():
                    self.send(PLAINTEXT_REFUSED)
                else:
                    response = args[1] if len(args) > 1 else None
                    if response is None:
                        self.writer.write(b"+ \r\n")
                        await self.writer.drain()
                        response = (await lines.read_line(self.reader)).decode("ascii", "replace").strip()
                    if response == "*":
                        self.send("-ERR Authentication cancelled.")
                    else:
                        try:
                            _authz, user, password = decode_sasl_plain("" if response == "=" else response)
                        except SaslError as exc:
                            self.send(f"-ERR [AUTH] Invalid SASL PLAIN response: {exc}.")
                        else:
                            if await self.login(user, password) in ("relayed", "close"):
                                return
                            continue
            else:
                self.send("-ERR Command not valid in this state; log in first.")
            await self.writer.drain()

    async def login(self, user: str, password: str) -> str:
        result = await self.ctx.check(self.peer, user, password)
        if not result.ok:
            self.failures += 1
            self.ctx.metrics.inc("proxy_logins_total", protocol="pop3", result="failed")
            self.log.info("pop3_login_failed", user=user[:100], reason=result.detail or result.failure)
            text = ("-ERR [AUTH] This mailbox is suspended; ask your administrator." if result.failure == "suspended"
                    else "-ERR [AUTH] Authentication failed.")
            self.send(text)
            await self.writer.drain()
            return "close" if self.failures >= max(self.ctx.config.auth.max_failures_per_session, 1) else "refused"
        entry = result.mailbox
        assert entry is not None
        shard = entry.shard_id
        timeout = float(self.ctx.config.proxy.connect_timeout_seconds if self.ctx.config.proxy else 10)
        try:
            shard_r, shard_w = await relay.connect(self.ctx.config, shard, "pop3")
        except relay.ShardDown:
            return await self.unavailable(entry.address, shard)
        try:
            greeting = await relay.read_line(shard_r, timeout)
            if not greeting.startswith(b"+OK"):
                raise relay.ShardDown(f"greeting {greeting[:80]!r}")
            if relay.tls_expected(self.ctx.config):
                shard_w.write(b"STLS\r\n")
                reply = await relay.read_line(shard_r, timeout)
                if not reply.startswith(b"+OK"):
                    raise relay.ShardDown(f"shard refused STLS: {reply[:200]!r}")
                await relay.secure(self.ctx.config, shard_w, timeout)
            shard_w.write(b"AUTH PLAIN " + self.ctx.credential.plain_response(entry.address).encode("ascii")
                          + b"\r\n")
            reply = await relay.read_line(shard_r, timeout)
        except relay.ShardDown as exc:
            shard_w.close()
            self.log.error("shard_login_failed", shard=shard, user=entry.address, error=str(exc))
            return await self.unavailable(entry.address, shard)
        if not reply.startswith(b"+OK"):
            # e.g. [IN-USE] (another POP3 session holds the maildrop): the shard's words
            shard_w.close()
            self.writer.write(reply)
            await self.writer.drain()
            return "refused"
        return await relay.pass_through(self, "pop3", entry.address, shard, reply, shard_r, shard_w)

    async def unavailable(self, user: str, shard: int) -> str:
        self.ctx.metrics.inc("proxy_logins_total", protocol="pop3", result="unavailable")
        self.log.warning("pop3_shard_unavailable", user=user, shard=shard)
        self.send("-ERR [SYS/TEMP] Your mailbox is temporarily unavailable; try again later.")
        await self.writer.drain()
        return "refused"
