"""ManageSieve before login, at the proxy (RFC 5804): CAPABILITY, NOOP,
LOGOUT, STARTTLS, AUTHENTICATE "PLAIN"; then the shard's session, relayed.
The capabilities are the mailstore's; ``NO (TRYLATER)`` when the mailbox's
shard is down."""
from __future__ import annotations

import asyncio
import re
import ssl

from .. import logs
from ..login import SaslError, decode_sasl_plain
from ..mailstore.managesieve import responses as r
from ..mailstore.managesieve.states import IMPLEMENTATION
from ..sieve import CAPABILITIES, Limits
from . import lines, relay
from .context import ProxyContext

log = logs.get(__name__)

_WORD = re.compile(rb'"((?:[^"\\\r\n]|\\.)*)"|\{(\d{1,4})\+?\}\r?\n|([^\s"{]+)')


class Session:
    def __init__(self, ctx: ProxyContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 peer: str, tls: bool) -> None:
        self.ctx, self.reader, self.writer, self.peer, self.tls = ctx, reader, writer, peer, tls
        self.failures = 0
        self.relaying = False  # logged in, bytes relayed to the shard
        self.log = log.bind(peer=peer, protocol="managesieve")

    def allowed(self) -> bool:
        return self.ctx.plaintext_allowed(self.peer, self.tls)

    def capabilities(self) -> bytes:
        items: list[tuple[str, str | None]] = [("IMPLEMENTATION", IMPLEMENTATION),
                                               ("SASL", "PLAIN" if self.allowed() else "")]
        if self.ctx.tls is not None and not self.tls:
            items.append(("STARTTLS", None))
        items += [("SIEVE", " ".join(CAPABILITIES)), ("MAXREDIRECTS", str(Limits().max_redirects)),
                  ("UNAUTHENTICATE", None), ("VERSION", "1.0")]
        return r.capabilities(items)

    async def words(self) -> list[bytes] | None:
        """A command's words, literals ({n+}) read in; None at end of stream."""
        out: list[bytes] = []
        line = await lines.read_line(self.reader)
        while True:
            if not line:
                return None
            pos = 0
            literal = None
            for m in _WORD.finditer(line):
                if m.group(1) is not None:
                    out.append(re.sub(rb"\\(.)", rb"\1", m.group(1)))
                elif m.group(2) is not None:
                    literal = int(m.group(2))
                    pos = m.end()
                    break
                else:
                    out.append(m.group(3))
            if literal is None:
                return out
            if literal > lines.MAX_LINE:
                raise lines.TooLong()
            out.append(await self.reader.readexactly(literal))
            line = await lines.read_line(self.reader) if pos >= len(line) else line[pos:]

    async def run(self) -> None:
        self.writer.write(self.capabilities() + r.ok(f"{IMPLEMENTATION} ready."))
        await self.writer.drain()
        while True:
            try:
                words = await self.words()
            except lines.TooLong:
                self.writer.write(r.bye("Line too long before login."))
                await self.writer.drain()
                return
            if words is None:
                return
            if not words:
                continue
            command = words[0].decode("ascii", "replace").upper()
            if command == "CAPABILITY":
                self.writer.write(self.capabilities() + r.ok("Capability completed."))
            elif command == "NOOP":
                self.writer.write(r.ok("NOOP completed."))
            elif command == "LOGOUT":
                self.writer.write(r.ok("Logout completed."))
                await self.writer.drain()
                return
            elif command == "STARTTLS":
                if self.tls or self.ctx.tls is None:
                    self.writer.write(r.no(f"TLS is {'already active' if self.tls else 'not available'}."))
                else:
                    self.writer.write(r.ok("Begin TLS negotiation now."))
                    await self.writer.drain()
                    buffered = getattr(self.reader, "_buffer", None)
                    if buffered:
                        buffered.clear()
                    try:
                        await self.writer.start_tls(self.ctx.tls.context, ssl_handshake_timeout=30)
                    except (ssl.SSLError, ConnectionError, OSError, TimeoutError) as exc:
                        self.log.info("managesieve_tls_failed", error=str(exc))
                        return
                    self.tls = True
                    self.writer.write(self.capabilities() + r.ok("TLS negotiation successful."))
            elif command == "AUTHENTICATE":
                outcome = await self.authenticate(words[1:])
                if outcome in ("relayed", "close"):
                    return
            else:
                self.writer.write(r.no("Authenticate first."))
            await self.writer.drain()

    async def authenticate(self, args: list[bytes]) -> str:
        mech = args[0].decode("ascii", "replace").upper() if args else ""
        if mech != "PLAIN":
            self.writer.write(r.no(f"Unsupported authentication mechanism {mech[:40]}; use PLAIN."))
            return "refused"
        if not self.allowed():
            self.writer.write(r.no("Plaintext authentication disallowed on non-secure connections; "
                                   "use STARTTLS first.", "ENCRYPT-NEEDED"))
            return "refused"
        if len(args) > 1:
            response = args[1]
        else:
            self.writer.write(r.string("") + b"\r\n")
            await self.writer.drain()
            got = await self.words()
            response = got[0] if got else b"*"
        if response.strip() == b"*":
            self.writer.write(r.no("Authentication cancelled."))
            return "refused"
        try:
            _authz, user, password = decode_sasl_plain(response)
        except SaslError as exc:
            self.writer.write(r.no(f"Invalid SASL PLAIN response: {exc}."))
            return "refused"
        result = await self.ctx.check(self.peer, user, password)
        if not result.ok:
            self.failures += 1
            self.ctx.metrics.inc("proxy_logins_total", protocol="managesieve", result="failed")
            if self.failures >= max(self.ctx.config.auth.max_failures_per_session, 1):
                self.writer.write(r.bye("Too many failed logins."))
                await self.writer.drain()
                return "close"
            self.writer.write(r.no("This mailbox is suspended; ask your administrator."
                                   if result.failure == "suspended" else "Authentication failed."))
            return "refused"
        entry = result.mailbox
        assert entry is not None
        shard = entry.shard_id
        timeout = float(self.ctx.config.proxy.connect_timeout_seconds if self.ctx.config.proxy else 10)
        try:
            shard_r, shard_w = await relay.connect(self.ctx.config, shard, "managesieve")
        except relay.ShardDown:
            return self.unavailable(entry.address, shard)
        try:
            await self.until_ok(shard_r, timeout)  # the shard's greeting: capabilities, then OK
            if relay.tls_expected(self.ctx.config):
                shard_w.write(b"STARTTLS\r\n")
                await self.until_ok(shard_r, timeout)
                await relay.secure(self.ctx.config, shard_w, timeout)
                await self.until_ok(shard_r, timeout)  # the capabilities again (RFC 5804 2.2)
            shard_w.write(b'AUTHENTICATE "PLAIN" "' + self.ctx.credential.plain_response(entry.address)
                          .encode("ascii") + b'"\r\n')
            reply = await relay.read_line(shard_r, timeout)
            if not reply.upper().startswith(b"OK"):
                raise relay.ShardDown(f"shard refused the proxy login: {reply[:200]!r}")
        except relay.ShardDown as exc:
            shard_w.close()
            # a mailbox being moved between shards says (TRYLATER) itself: expected, not an error
            (self.log.info if "TRYLATER" in str(exc) else self.log.error)(
                "shard_login_failed", shard=shard, user=entry.address, error=str(exc))
            return self.unavailable(entry.address, shard)
        return await relay.pass_through(self, "managesieve", entry.address, shard, reply, shard_r, shard_w)

    @staticmethod
    async def until_ok(shard_r: asyncio.StreamReader, timeout: float) -> None:
        while True:
            line = await relay.read_line(shard_r, timeout)
            if line.upper().startswith(b"OK"):
                return
            if line.upper().startswith((b"NO", b"BYE")):
                raise relay.ShardDown(f"shard said {line[:120]!r}")

    def unavailable(self, user: str, shard: int) -> str:
        self.ctx.metrics.inc("proxy_logins_total", protocol="managesieve", result="unavailable")
        self.log.warning("managesieve_shard_unavailable", user=user, shard=shard)
        self.writer.write(r.no("Your mailbox is temporarily unavailable; try again later.", "TRYLATER"))
        return "refused"
