"""The relay's SMTP protocol: aiosmtpd's read loop and TLS handling, with
correo's commands on top.

:class:`RelaySMTP` keeps aiosmtpd's connection handling (the command loop,
STARTTLS, timeouts, the unknown-command budget) and replaces the commands
whose rules are correo's: EHLO/HELO (what is advertised where; aiosmtpd's
HELP lists the same: no AUTH where AUTH is refused), AUTH (checked against
the directory through :func:`correo_server.login.check_login`), MAIL, RCPT
and DATA (decided by :mod:`.policy`, read by :mod:`.data`, stamped by
:mod:`.received`, signed by :mod:`.dkim`, handed over by :mod:`.handoff`).

Every reply goes through :meth:`RelaySMTP.push`, which adds an enhanced
status code where one is missing (:func:`.replies.with_status`).  Every
command counts towards ``maxCommandsPerSession``; a NUL byte in a command is
refused.  Connections over the total or per-client limits get
``421 4.7.0`` and are closed before the greeting.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import functools
import secrets
import time
import types
from datetime import datetime, timezone
from typing import Any

from aiosmtpd.smtp import SMTP, Session, TLSSetupException, syntax

from .. import logs
from ..guard import plaintext_login_allowed
from ..login import SaslError, check_login, decode_sasl_plain
from ..smtpbase import Speedups, data_pieces
from . import context as ctxmod
from .context import RelayContext
from .data import MessageReader
from .handoff import HandoffError, client_reply
from ..wire.paths import PathError, parse_params, parse_path, split_keyword
from .policy import (Listener, check_mail_params, check_rcpt_params, check_recipient, check_sender,
                     needs_smtputf8, resolve_postmaster)
from .received import TLSInfo, protocol_name, received_header
from ..wire.replies import Reply, with_status

log = logs.get(__name__)

_ID_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXZ"


def new_id() -> str:
    """A message id for logs and the Received header (12 characters; one
    call for randomness, not one per character)."""
    n = secrets.randbelow(len(_ID_ALPHABET) ** 12)
    out = []
    for _ in range(12):
        n, digit = divmod(n, len(_ID_ALPHABET))
        out.append(_ID_ALPHABET[digit])
    return "".join(out)


def _printable(text: str) -> str:
    if text.isprintable():  # the usual case: nothing to replace
        return text
    return "".join(ch if ch >= " " and ch != "\x7f" else "?" for ch in text)


class RelaySession(Session):
    """aiosmtpd's session plus who logged in.  A new one is made after
    STARTTLS, which forgets everything said before it (RFC 3207 section 4.2)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.mailbox = None  # the authenticated MailboxEntry
        self.mail_options = None  # policy.MailOptions of the current transaction
        self.rcpt_attempts = 0


class _Hooks:
    """aiosmtpd calls this when a command raises: log it, answer 451."""

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):  # a client's failed handshake is not our bug
            log.info("tls_handshake_failed", error=str(error.__cause__ or error)[:200])
            return "454 4.7.0 TLS handshake failed"
        log.error("session_error", error=type(error).__name__, detail=str(error)[:200], exc_info=error)
        return "451 4.3.0 Internal error; try again later"


_HOOKS = _Hooks()  # stateless: one for every session


def _guard(func):
    """``smtp_<VERB>`` wrapped with the checks every command gets: the
    per-session command budget and the NUL refusal."""

    @functools.wraps(func)  # keeps aiosmtpd's HELP text
    async def run(self: "RelaySMTP", arg: str | None) -> None:
        self._commands += 1
        limit = self.ctx.config.relay.max_commands_per_session
        if limit and self._commands > limit:
            self.ctx.count_rejection("too_many_commands")
            await self.push("421 4.7.0 Too many commands in one session; closing connection")
            self._close()
            return
        if arg is not None and "\x00" in arg:
            self.ctx.count_rejection("nul")
            await self.push("500 5.5.2 NUL characters are not allowed in commands")
            return
        await func(self, arg)
    return run


_GUARDED: dict[type, dict[str, Any]] = {}


def _guarded_methods(cls: type) -> dict[str, Any]:
    """VERB → guarded function, made once per class."""
    table = _GUARDED.get(cls)
    if table is None:
        table = _GUARDED[cls] = {name[5:]: _guard(getattr(cls, name)) for name in dir(cls)
                                 if name.startswith("smtp_")}
    return table


class RelaySMTP(Speedups, SMTP):
    def __init__(self, ctx: RelayContext, listener: Listener, *, starttls: Any = None,
                 implicit_tls: bool = False) -> None:
        relay = ctx.config.relay
        # Read buffer limit: the longest allowed text line, its CRLF and a transparency dot.
        self.line_length_limit = relay.max_line_length + 3
        self.ctx = ctx
        self.listener = listener
        self._implicit_tls = implicit_tls
        self._greeted = False
        self._admitted = False
        self._commands = 0
        self._auth_failures = 0
        self.peer_ip = ""
        self.busy = False  # inside DATA: do not cut the connection on shutdown
        self.log = log
        super().__init__(_HOOKS, data_size_limit=relay.max_message_bytes, enable_SMTPUTF8=True,
                         decode_data=False, hostname=ctx.config.hostname, ident="ESMTP correo",
                         tls_context=starttls, timeout=relay.timeout_seconds, auth_require_tls=True,
                         loop=asyncio.get_running_loop())
        # aiosmtpd keeps these limits on the class; give this session its own.
        self.command_size_limits = collections.defaultdict(
            lambda: SMTP.command_size_limit, {"MAIL": 1024, "RCPT": 1024, "AUTH": self.line_length_limit})
        self._smtp_methods = {verb: types.MethodType(func, self)
                              for verb, func in _guarded_methods(type(self)).items()}

    # -- plumbing ------------------------------------------------------------
    def _create_session(self) -> Session:
        return RelaySession(self.loop)

    @property
    def tls_active(self) -> bool:
        return self._implicit_tls or self._tls_protocol is not None

    def _ssl_object(self):
        if self.session is not None and self.session.ssl:
            return self.session.ssl.get("ssl_object")
        return self.transport.get_extra_info("ssl_object") if self.transport else None

    # What EHLO advertises and HELP lists (aiosmtpd's ``@syntax(when=...)``
    # names these): only what this port offers this client now.
    @property
    def _auth_offered(self) -> bool:
        return self.listener.requires_auth and plaintext_login_allowed(
            self.ctx.config.auth, self.peer_ip, self.tls_active)

    @property
    def _starttls_offered(self) -> bool:
        return self.tls_context is not None and not self.tls_active

    async def push(self, status) -> None:
        if isinstance(status, str):
            # Replies never echo control characters back (aiosmtpd quotes unknown commands).
            status = "\r\n".join(_printable(line) for line in status.split("\r\n"))
            if self._greeted:  # the greeting carries no enhanced code (RFC 2034)
                status = with_status(status)
            self._greeted = True
        await super().push(status)

    async def _raw(self, text: str) -> None:
        self._greeted = True
        await SMTP.push(self, text)

    async def _refuse(self, reply: Reply) -> None:
        self.ctx.count_rejection(reply.reason)
        await self.push(str(reply))

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- connection ----------------------------------------------------------
    async def _handle_client(self) -> None:
        peer = self.session.peer if self.session else None
        self.peer_ip = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer or "")
        self.log = log.bind(listener=self.listener.value, peer=self.peer_ip)
        refusal = self.ctx.gate.admit(self.peer_ip)
        if refusal is not None:
            self.ctx.metrics.inc(ctxmod.CONNECTIONS_REFUSED, reason=refusal)
            self.ctx.count_rejection("connection_limit")
            self.log.info("connection_refused", reason=refusal)
            self._greeted = True
            await self.push(f"421 4.7.0 {self.hostname} {refusal}; try again later")
            self._close()
            return
        self._admitted = True
        self.ctx.sessions.add(self)
        self.ctx.metrics.inc(ctxmod.CONNECTIONS, listener=self.listener.value)
        self.ctx.metrics.set(ctxmod.CONNECTIONS_OPEN, self.ctx.gate.total)
        await super()._handle_client()

    def _timeout_cb(self) -> None:
        """Idle too long: say so (RFC 5321 section 4.5.3.2 allows the 421), then close."""
        if self.transport is not None and not self.transport.is_closing():
            self.log.info("session_timeout")
            try:
                self.transport.write(f"421 4.4.2 {self.hostname} Error: timeout exceeded\r\n".encode())
            except Exception:  # the transport may already be failing
                pass
        super()._timeout_cb()

    def connection_lost(self, error: Exception | None) -> None:
        if self._admitted:
            self._admitted = False
            self.ctx.gate.release(self.peer_ip)
            self.ctx.sessions.discard(self)
            self.ctx.metrics.set(ctxmod.CONNECTIONS_OPEN, self.ctx.gate.total)
        super().connection_lost(error)

    # -- greeting and capabilities -------------------------------------------
    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str | None) -> None:
        if not hostname:
            await self.push("501 5.5.4 Syntax: EHLO hostname")
            return
        self._set_rset_state()
        self.session.extended_smtp = True
        self.session.host_name = hostname
        lines = [f"{self.hostname}", "PIPELINING", f"SIZE {self.ctx.config.relay.max_message_bytes}",
                 "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"]
        if self._starttls_offered:
            lines.append("STARTTLS")
        if self._auth_offered:
            lines.append("AUTH PLAIN LOGIN")
        await self._raw("\r\n".join(f"250{'-' if i < len(lines) - 1 else ' '}{line}"
                                    for i, line in enumerate(lines)))

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str | None) -> None:
        if not hostname:
            await self.push("501 5.5.4 Syntax: HELO hostname")
            return
        self._set_rset_state()
        self.session.extended_smtp = False
        self.session.host_name = hostname
        await self._raw(f"250 {self.hostname}")

    @syntax("STARTTLS", when="_starttls_offered")
    async def smtp_STARTTLS(self, arg: str | None) -> None:
        if self.tls_active:
            await self.push("503 5.5.1 TLS is already active")
            return
        if self.tls_context is None:
            await self.push("454 4.7.0 TLS not available")
            return
        await super().smtp_STARTTLS(arg)

    # -- AUTH (RFC 4954; PLAIN RFC 4616, LOGIN) --------------------------------
    async def _challenge(self, text: str) -> str | None:
        """Send a 334 challenge, return the client's base64 answer (None if it
        aborted or sent nonsense; the reply has then been sent)."""
        await self._raw("334 " + base64.b64encode(text.encode()).decode())
        try:
            line = await self._reader.readline()
        except ValueError:
            await self.push("501 5.5.2 Authentication line too long")
            return None
        answer = line.strip().decode("ascii", "replace")
        if answer == "*":
            await self.push("501 5.7.0 Authentication aborted")
            return None
        return answer

    async def _sasl_credentials(self, mechanism: str, initial: str | None) -> tuple[str, str] | None:
        if mechanism == "PLAIN":
            answer = initial if initial is not None else await self._challenge("")
            if answer is None:
                return None
            try:
                _authz, user, password = decode_sasl_plain("" if answer == "=" else answer)
            except SaslError as exc:
                await self.push(f"501 5.5.2 Invalid PLAIN response: {exc}")
                return None
            return user, password
        # LOGIN: username, then password, each base64
        user_b64 = initial if initial is not None else await self._challenge("Username:")
        if user_b64 is None:
            return None
        password_b64 = await self._challenge("Password:")
        if password_b64 is None:
            return None
        try:
            user = base64.b64decode(user_b64, validate=True).decode("utf-8")
            password = base64.b64decode(password_b64, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            await self.push("501 5.5.2 Cannot decode base64")
            return None
        return user, password

    @syntax("AUTH <mechanism> [initial-response]", when="_auth_offered")
    async def smtp_AUTH(self, arg: str | None) -> None:
        session = self.session
        if not self.listener.requires_auth:
            await self._refuse(Reply(503, "5.5.1", "AUTH is not available on this port; use submission",
                                     "auth_not_offered"))
            return
        if not session.host_name or not session.extended_smtp:
            await self.push("503 5.5.1 Send EHLO first")
            return
        if session.mailbox is not None:
            await self.push("503 5.5.1 Already authenticated")
            return
        if self.envelope.mail_from is not None:
            await self.push("503 5.5.1 AUTH is not permitted during a mail transaction")
            return
        if not plaintext_login_allowed(self.ctx.config.auth, self.peer_ip, self.tls_active):
            await self._refuse(Reply(538, "5.7.11", "Encryption required for requested authentication mechanism "
                                     "(use STARTTLS first)", "auth_without_tls"))
            return
        parts = (arg or "").split()
        if not parts or len(parts) > 2:
            await self.push("501 5.5.4 Syntax: AUTH mechanism [initial-response]")
            return
        mechanism = parts[0].upper()
        if mechanism not in ("PLAIN", "LOGIN"):
            await self.push("504 5.5.4 Unrecognized authentication type")
            return
        creds = await self._sasl_credentials(mechanism, parts[1] if len(parts) == 2 else None)
        if creds is None:
            return
        user, password = creds
        result = await check_login(self.ctx.directory.get(), self.ctx.throttle, self.peer_ip, user, password)
        if result.ok:
            session.mailbox = result.mailbox
            self._auth_failures = 0
            self.ctx.metrics.inc(ctxmod.AUTH, result="ok")
            self.log.info("auth_ok", mechanism=mechanism, mailbox=result.mailbox.address)
            await self.push("235 2.7.0 Authentication successful")
            return
        self._auth_failures += 1
        self.ctx.metrics.inc(ctxmod.AUTH, result=result.failure or "failed")
        self.ctx.count_rejection("auth_failed")
        self.log.info("auth_failed", mechanism=mechanism, failure=result.failure)
        if result.failure == "suspended":
            await self.push("535 5.7.8 Authentication refused: the mailbox is suspended")
        else:
            await self.push("535 5.7.8 Authentication credentials invalid")
        limit = self.ctx.config.auth.max_failures_per_session
        if limit and self._auth_failures >= limit:
            await self.push("421 4.7.0 Too many failed authentication attempts; closing connection")
            self._close()

    # -- the mail transaction ------------------------------------------------
    async def _transaction_refusal(self) -> Reply | None:
        if not self.session.host_name:
            return Reply(503, "5.5.1", "Send HELO or EHLO first")
        if self.listener.requires_auth and self.session.mailbox is None:
            return Reply(530, "5.7.0", "Authentication required", "auth_required")
        return None

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        refusal = await self._transaction_refusal()
        if refusal:
            await self._refuse(refusal)
            return
        if self.envelope.mail_from is not None:
            await self.push("503 5.5.1 Nested MAIL command")
            return
        rest = split_keyword(arg, "FROM:")
        if rest is None:
            await self.push("501 5.5.4 Syntax: MAIL FROM:<address> [parameters]")
            return
        relay = self.ctx.config.relay
        try:
            sender, param_text = parse_path(rest, allow_null=True)
            params = parse_params(param_text)
        except PathError as exc:
            await self._refuse(exc.reply)
            return
        options = check_mail_params(params, extended=self.session.extended_smtp, max_bytes=relay.max_message_bytes)
        if isinstance(options, Reply):
            await self._refuse(options)
            return
        refusal = sender and needs_smtputf8(sender, options.smtputf8)
        if refusal:
            await self._refuse(refusal)
            return
        if not self.ctx.limiter.allowed(self.peer_ip):
            await self._refuse(self.ctx.limiter.rate_limited_reply(self.peer_ip))
            return
        refusal = check_sender(self.listener, self.session.mailbox, sender, self.ctx.directory.get())
        if refusal:
            self.log.info("sender_refused", sender=sender.address if sender else "", reason=refusal.reason)
            await self._refuse(refusal)
            return
        self.envelope.mail_from = sender.address if sender else ""
        self.envelope.smtp_utf8 = options.smtputf8
        self.envelope.mail_options = [f"{k}={v}" if v is not None else k for k, v in params.items()]
        self.session.mail_options = options
        self.session.rcpt_attempts = 0
        await self.push(f"250 2.1.0 Sender <{self.envelope.mail_from}> OK")

    @syntax("RCPT TO: <address>")
    async def smtp_RCPT(self, arg: str | None) -> None:
        refusal = await self._transaction_refusal()
        if refusal:
            await self._refuse(refusal)
            return
        if self.envelope.mail_from is None:
            await self.push("503 5.5.1 Need MAIL command first")
            return
        self.session.rcpt_attempts += 1
        rest = split_keyword(arg, "TO:")
        if rest is None:
            await self.push("501 5.5.4 Syntax: RCPT TO:<address>")
            return
        config = self.ctx.config
        try:
            rcpt, param_text = parse_path(rest, allow_null=False)
            params = parse_params(param_text)
        except PathError as exc:
            await self._refuse(exc.reply)
            return
        assert rcpt is not None
        refusal = check_rcpt_params(params) or needs_smtputf8(rcpt, self.envelope.smtp_utf8)
        if refusal:
            await self._refuse(refusal)
            return
        rcpt = resolve_postmaster(rcpt, config)
        if len(self.envelope.rcpt_tos) >= config.relay.max_recipients:
            await self._refuse(Reply(452, "4.5.3", f"Too many recipients (at most {config.relay.max_recipients} "
                                     "per message)", "too_many_recipients"))
            return
        refusal = check_recipient(self.listener, self.session.mailbox is not None, rcpt, config,
                                  self.ctx.directory.get())
        if refusal:
            self.log.info("recipient_refused", recipient=rcpt.address, reason=refusal.reason)
            await self._refuse(refusal)
            return
        address = rcpt.address
        if address.lower() not in (r.lower() for r in self.envelope.rcpt_tos):
            self.envelope.rcpt_tos.append(address)
        await self.push(f"250 2.1.5 Recipient <{address}> OK")

    @syntax("DATA")
    async def smtp_DATA(self, arg: str | None) -> None:
        refusal = await self._transaction_refusal()
        if refusal:
            await self._refuse(refusal)
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        if self.envelope.mail_from is None:
            await self.push("503 5.5.1 Need MAIL command first")
            return
        if not self.envelope.rcpt_tos:
            if self.session.rcpt_attempts:
                await self.push("554 5.5.1 No valid recipients")
            else:
                await self.push("503 5.5.1 Need RCPT command first")
            return
        relay = self.ctx.config.relay
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        reader = MessageReader(relay.max_message_bytes, relay.max_line_length)
        self.busy = True
        try:
            if not await self._read_message(reader):
                return
            self.ctx.metrics.inc(ctxmod.BYTES, reader.received, listener=self.listener.value)
            refusal = reader.refusal()
            if refusal is not None:
                self.log.info("message_refused", reason=refusal.reason, size=reader.size)
                self._set_post_data_state()
                await self._refuse(refusal)
                return
            self._reset_timeout()  # the hand-off is the server's time, not the client's
            try:
                reply = await self._accept(reader.content())
            except Exception as exc:  # a bug must not leave the transaction half-open
                self.log.error("accept_failed", error=type(exc).__name__, exc_info=exc)
                reply = Reply(451, "4.3.0", "Internal error; message not accepted, try again later",
                              "internal_error")
                self.ctx.count_rejection(reply.reason)
            self._set_post_data_state()
            await self.push(str(reply))
        finally:
            self.busy = False

    async def _read_message(self, reader: MessageReader) -> bool:
        """Read up to the end-of-data line; False when the connection went away.

        Reads up to each ``.<CRLF>`` (a few large pieces for a whole message,
        not a line at a time); only a ``.`` line after a CRLF ends the data."""
        last_reset = self.loop.time()
        held = b""  # a CR that ended a piece, kept until the octet after it comes
        try:
            async for piece, end in data_pieces(self._reader):
                if self.transport is None:
                    return False
                data, held = held + piece, b""
                if end:
                    reader.feed_bytes(data)
                    reader.finish()
                    return True
                if data.endswith(b"\r"):
                    data, held = data[:-1], b"\r"
                reader.feed_bytes(data)
                now = self.loop.time()
                if now - last_reset > 1.0:  # a slow, big message is not an idle session
                    self._reset_timeout()
                    last_reset = now
        except asyncio.IncompleteReadError:
            self._close()
        return False

    async def _accept(self, content: bytes) -> Reply:
        """Stamp, sign and hand over one message; the reply for the client."""
        envelope, session = self.envelope, self.session
        relay_id = new_id()
        options = session.mail_options
        tls = TLSInfo.from_ssl_object(self._ssl_object()) if self.tls_active else None
        protocol = protocol_name(esmtp=session.extended_smtp, tls=self.tls_active,
                                 authenticated=session.mailbox is not None, smtputf8=envelope.smtp_utf8)
        header = received_header(helo=session.host_name, peer_ip=self.peer_ip, hostname=self.hostname,
                                 protocol=protocol, queue_id=relay_id, tls=tls, recipients=envelope.rcpt_tos,
                                 when=datetime.fromtimestamp(self.ctx.clock(), timezone.utc))
        pieces = [header, content]
        if session.mailbox is not None:
            signature = await self.ctx.signer.sign(header + content, envelope.mail_from)
            if signature:
                pieces.insert(0, signature)
        size = sum(len(p) for p in pieces)
        started = time.monotonic()
        try:
            outcome = await self.ctx.queue.deliver(envelope.mail_from, list(envelope.rcpt_tos), pieces,
                                                   smtputf8=envelope.smtp_utf8,
                                                   body=options.body if options else None, ident=relay_id)
        except HandoffError as exc:
            outcome = exc
            self.ctx.queue_ready = False
            self.ctx.metrics.set(ctxmod.QUEUE_UP, 0)
            self.log.warning("queue_handoff_failed", id=relay_id, kind=exc.kind, detail=exc.detail)
        self.ctx.metrics.inc(ctxmod.HANDOFF_SECONDS, time.monotonic() - started)
        reply = client_reply(outcome, relay_id)
        if reply.code == 250:
            self.ctx.limiter.record(self.peer_ip)
            self.ctx.count_accepted(self.listener.value, size)
            self.log.info("message_accepted", id=relay_id, queue_id=getattr(outcome, "queued_as", None),
                          sender=envelope.mail_from, recipients=len(envelope.rcpt_tos), size=size,
                          protocol=protocol)
        else:
            self.ctx.count_rejection(reply.reason)
            self.log.info("message_not_accepted", id=relay_id, reply=str(reply), sender=envelope.mail_from)
        return reply
