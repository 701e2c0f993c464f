"""IMAP before login, at the proxy (RFC 9051/3501 subset): CAPABILITY, NOOP,
LOGOUT, ID, STARTTLS, LOGIN, AUTHENTICATE PLAIN/LOGIN (with SASL-IR); then
the shard's session, relayed.  Replies are the mailstore's own words
(``[AUTHENTICATIONFAILED]``, ``[PRIVACYREQUIRED]``, ``[CONTACTADMIN]``), and
``[UNAVAILABLE]`` when the mailbox's shard is down."""
from __future__ import annotations

import asyncio
import base64
import binascii
import ssl

from .. import logs
from ..login import SaslError, decode_sasl_plain
from . import lines, relay
from .context import ProxyContext

log = logs.get(__name__)

SHARD_TAG = b"P1"


class Session:
    def __init__(self, ctx: ProxyContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 peer: str, tls: bool) -> None:
        self.ctx, self.reader, self.writer, self.peer, self.tls = ctx, reader, writer, peer, tls
        self.failures = 0
        self.relaying = False  # logged in, bytes relayed to the shard
        self.log = log.bind(peer=peer, protocol="imap")

    # -- words --------------------------------------------------------------------------------
    def capabilities(self) -> str:
        caps = ["IMAP4rev1", "SASL-IR", "LITERAL+", "ID", "ENABLE", "IDLE"]
        if self.ctx.tls is not None and not self.tls:
            caps.append("STARTTLS")
        if self.ctx.plaintext_allowed(self.peer, self.tls):
            caps += ["AUTH=PLAIN", "AUTH=LOGIN"]
        else:
            caps.append("LOGINDISABLED")
        return " ".join(caps)

    def send(self, text: str) -> None:
        self.writer.write(text.encode("utf-8") + b"\r\n")

    # -- the loop --------------------------------------------------------------------------------
    async def run(self) -> None:
        self.send(f"* OK [CAPABILITY {self.capabilities()}] {self.ctx.config.hostname} correo IMAP ready.")
        await self.writer.drain()
        while True:
            try:
                line = await lines.read_imap_command(self.reader, self.writer)
            except lines.TooLong:
                self.send("* BYE Command line too long before login.")
                return
            if not line:
                return
            tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
            name, _, args = rest.partition(b" ")
            tag_s = tag.decode("ascii", "replace")[:64]
            command = name.decode("ascii", "replace").upper()
            if not tag or not name:
                self.send(f"{tag_s or '*'} BAD Missing command.")
            elif command == "CAPABILITY":
                self.send(f"* CAPABILITY {self.capabilities()}")
                self.send(f"{tag_s} OK Capability completed.")
            elif command == "NOOP":
                self.send(f"{tag_s} OK NOOP completed.")
            elif command == "ID":
                self.send('* ID ("name" "correo")')
                self.send(f"{tag_s} OK ID completed.")
            elif command == "LOGOUT":
                self.send("* BYE Logging out.")
                self.send(f"{tag_s} OK Logout completed.")
                await self.writer.drain()
                return
            elif command == "STARTTLS":
                if not await self.starttls(tag_s):
                    return
                continue
            elif command in ("LOGIN", "AUTHENTICATE"):
                outcome = await self.login(tag_s, command, args)
                if outcome == "relayed" or outcome == "close":
                    return
            else:
                self.send(f"{tag_s} BAD Command not valid before login; log in first.")
            await self.writer.drain()

    async def starttls(self, tag: str) -> bool:
        if self.tls or self.ctx.tls is None:
            self.send(f"{tag} BAD TLS is {'already active' if self.tls else 'not available'}.")
            return True
        self.send(f"{tag} OK Begin TLS negotiation now.")
        await self.writer.drain()
        buffered = getattr(self.reader, "_buffer", None)
        if buffered:  # no command injection before the handshake (RFC 2595 section 4)
            buffered.clear()
        try:
            await self.writer.start_tls(self.ctx.tls.context, ssl_handshake_timeout=30)
        except (ssl.SSLError, ConnectionError, OSError, TimeoutError) as exc:
            self.log.info("imap_tls_failed", error=str(exc))
            return False
        self.tls = True
        return True

    # -- login ---------------------------------------------------------------------------------
    async def credentials(self, tag: str, command: str, args: bytes) -> tuple[str, str] | str:
        """(user, password), or a reply line already sent ("sent")."""
        if command == "LOGIN":
            words = lines.tokens(args)
            if len(words) != 2:
                self.send(f"{tag} BAD LOGIN needs a user name and a password.")
                return "sent"
            try:
                return words[0].decode("utf-8"), words[1].decode("utf-8")
            except UnicodeDecodeError:
                return "", ""
        words = args.split()
        mech = words[0].decode("ascii", "replace").upper() if words else ""
        initial = words[1] if len(words) > 1 else None
        try:
            if mech == "PLAIN":
                response = initial if initial is not None else await self.challenge(b"")
                if response is None:
                    self.send(f"{tag} BAD Authentication cancelled.")
                    return "sent"
                _authzid, user, password = decode_sasl_plain(b"" if response == b"=" else response)
                return user, password
            if mech == "LOGIN":
                first = initial if initial is not None else await self.challenge(b"Username:")
                second = await self.challenge(b"Password:") if first is not None else None
                if first is None or second is None:
                    self.send(f"{tag} BAD Authentication cancelled.")
                    return "sent"
                return (base64.b64decode(first, validate=True).decode("utf-8"),
                        base64.b64decode(second, validate=True).decode("utf-8"))
        except SaslError as exc:
            if str(exc) == "not valid base64":
                self.send(f"{tag} BAD Invalid base64 data in the SASL response.")
                return "sent"
            return "", ""  # e.g. another authorization identity: a failed login
        except (ValueError, binascii.Error, UnicodeDecodeError):
            self.send(f"{tag} BAD Invalid base64 data in the SASL response.")
            return "sent"
        self.send(f"{tag} NO Unsupported authentication mechanism.")
        return "sent"

    async def challenge(self, prompt: bytes) -> bytes | None:
        self.writer.write(b"+ " + base64.b64encode(prompt) + b"\r\n" if prompt else b"+ \r\n")
        await self.writer.drain()
        line = (await lines.read_line(self.reader)).rstrip(b"\r\n")
        return None if line == b"*" else line

    async def login(self, tag: str, command: str, args: bytes) -> str:
        if not self.ctx.plaintext_allowed(self.peer, self.tls):
            self.send(f"{tag} NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) "
                      "connections.")
            return "refused"
        creds = await self.credentials(tag, command, args)
        if creds == "sent":
            return "refused"
        user, password = creds
        result = await self.ctx.check(self.peer, user, password)
        if not result.ok:
            self.failures += 1
            self.ctx.metrics.inc("proxy_logins_total", protocol="imap", result="failed")
            self.log.info("imap_login_failed", user=user[:100], reason=result.detail or result.failure)
            if self.failures >= self.ctx.config.auth.max_failures_per_session:
                self.send("* BYE Too many invalid authentication attempts.")
                await self.writer.drain()
                return "close"
            if result.failure == "suspended":
                self.send(f"{tag} NO [CONTACTADMIN] This mailbox is suspended; contact your administrator.")
            else:
                self.send(f"{tag} NO [AUTHENTICATIONFAILED] Authentication failed.")
            return "refused"
        entry = result.mailbox
        assert entry is not None
        shard = entry.shard_id
        try:
            shard_r, shard_w = await relay.connect(self.ctx.config, shard, "imap")
        except relay.ShardDown:
            return self.unavailable(tag, entry.address, shard)
        try:
            timeout = float(self.ctx.config.proxy.connect_timeout_seconds if self.ctx.config.proxy else 10)
            greeting = await relay.read_line(shard_r, timeout)
            if not greeting.startswith(b"* OK"):
                raise relay.ShardDown(f"greeting {greeting[:80]!r}")
            if relay.tls_expected(self.ctx.config):
                shard_w.write(SHARD_TAG + b" STARTTLS\r\n")
                while not (reply := await relay.read_line(shard_r, timeout)).startswith(SHARD_TAG + b" "):
                    pass
                if not reply.startswith(SHARD_TAG + b" OK"):
                    raise relay.ShardDown(f"shard refused STARTTLS: {reply[:200]!r}")
                await relay.secure(self.ctx.config, shard_w, timeout)
            shard_w.write(SHARD_TAG + b" AUTHENTICATE PLAIN " + self.ctx.credential.plain_response(entry.address)
                          .encode("ascii") + b"\r\n")
            while True:
                reply = await relay.read_line(shard_r, timeout)
                if reply.startswith(SHARD_TAG + b" "):
                    break
            if not reply.startswith(SHARD_TAG + b" OK"):
                raise relay.ShardDown(f"shard refused the proxy login: {reply[:200]!r}")
        except relay.ShardDown as exc:
            shard_w.close()
            # a mailbox being moved between shards says [UNAVAILABLE] itself: expected, not an error
            (self.log.info if "[UNAVAILABLE]" in str(exc) else self.log.error)(
                "shard_login_failed", shard=shard, user=entry.address, error=str(exc))
            return self.unavailable(tag, entry.address, shard)
        return await relay.pass_through(self, "imap", entry.address, shard, tag.encode("ascii") + reply[len(SHARD_TAG):], shard_r, shard_w)

    def unavailable(self, tag: str, user: str, shard: int) -> str:
        self.ctx.metrics.inc("proxy_logins_total", protocol="imap", result="unavailable")
        self.log.warning("imap_shard_unavailable", user=user, shard=shard)
        self.send(f"{tag} NO [UNAVAILABLE] Your mailbox is temporarily unavailable; try again later.")
        return "refused"
