"""The relay's SMTP protocol (RFC 5321, with RFC 1870 SIZE, RFC 2920
PIPELINING, RFC 2034 ENHANCEDSTATUSCODES, RFC 6152 8BITMIME, RFC 6531
SMTPUTF8, RFC 3207 STARTTLS, RFC 4954 AUTH PLAIN/LOGIN): what each command
means, on the connection I/O of :mod:`.connection`.

The relay serves the open internet on correo's own server rather than
aiosmtpd (issue 12): the same command rules, read from one class-level
table, without a stream reader, a task and method tables per connection,
or a timer reset per command.  Each command is decided by :mod:`.policy`;
the message is read by :mod:`.data`, stamped by :mod:`.received`, signed by
:mod:`.dkim` and handed over by :mod:`.handoff`; a login is checked against
the directory through :func:`correo_server.login.check_login`.

Commands answer at once unless they have to wait (SPF at ``MAIL``, the
DNSBL verdict at ``RCPT``, a login, the message and its hand-off, the TLS
handshake): those return a coroutine, which :mod:`.connection` runs while
the rest of the input waits.  EHLO and HELP advertise only what the port
offers (no AUTH where AUTH is refused, no STARTTLS once TLS is on).  The
session's idle timer says ``421 4.4.2`` after ``timeout_seconds`` without
input (and, on submission, after ``auth.loginTimeoutSeconds`` without a
login); over-long command lines get ``500 5.5.2``; after
:data:`BOGUS_LIMIT` unrecognised commands the client is told goodbye.

On port 25 (never on submission, whose users have logged in) the relay
runs the defences (:mod:`correo_server.defences`), each at the earliest
stage that can decide, when the context has them:

* at connect (``connection_made``): the DNS blocklist lookups start;
* at ``MAIL FROM``: SPF for the MAIL FROM and HELO identities
  (``550 5.7.23`` on fail, ``451 4.7.24`` on a DNS failure);
* at ``RCPT TO``: the blocklist verdict (``554 5.7.1``), SRS bounce addresses
  (forged ones ``550 5.1.1``), before the recipient rules;
* at the end of DATA, before the hand-off: DKIM, DMARC (``p=reject`` →
  ``550 5.7.1``), the own-domain rule, then rspamd; the message goes to the
  queue with one ``Authentication-Results:`` and the ``X-Spam-*`` fields on
  top, forged ones removed, and with ``XVERDICT`` when its sender failed SPF
  or DMARC (:mod:`correo_server.backscatter.verdict`: no notice to it, ever).

On every listener, against backscatter (:mod:`correo_server.backscatter`):
at ``RCPT TO`` an address that forwards to a suspended or unknown mailbox,
or whose mailbox is full (``452 4.2.2``) or too small for the announced
SIZE (``552 5.2.2``), is refused; at the end of DATA a message larger than
a recipient's room left (``552 5.2.2``).  Every refusal with a reason of
:mod:`correo_server.refusalreport` is counted for the domain's status.

Every reply carries an enhanced status code (RFC 2034; the greeting and
the EHLO/HELO lines excepted), and never echoes a control character back.
Every command counts towards ``maxCommandsPerSession``; a NUL byte in a command is
refused.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import secrets
import time
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from .. import deliverykeys, logs
from ..backscatter import verdict as verdictmod
from ..defences import ConnectionDefences
from ..guard import plaintext_login_allowed
from ..login import SaslError, check_login, decode_sasl_plain, wait_hint
from ..scanning.rspamd import Envelope as ScanEnvelope
from ..wire.paths import PathError, parse_params, parse_path, split_keyword
from ..wire.replies import Reply, with_status
from . import context as ctxmod
from .connection import DataSink, LineConnection, LineTooLong
from .context import RelayContext
from .data import MessageReader
from .handoff import HandoffError, client_reply
from .policy import (Listener, MailOptions, check_mail_params, check_rcpt_params, check_recipient, check_sender,
                     needs_smtputf8, resolve_postmaster)
from .received import TLSInfo, protocol_name, received_header

log = logs.get(__name__)

_ID_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXZ"
COMMAND_LIMIT = 512  # octets of a command line without CRLF (RFC 5321 section 4.5.3.1.4)
PATH_COMMAND_LIMIT = 1024  # MAIL and RCPT after EHLO: room for their parameters
BOGUS_LIMIT = 5  # unrecognised commands before the client is told goodbye
TLS_HANDSHAKE_SECONDS = 30.0


def new_id() -> str:
    """A message id for logs and the Received header (12 characters; one
    call for randomness, not one per character).  The queue keeps it as its
    queue id (:mod:`correo_server.queue.lmtp_in`): one id per message."""
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


class Session:
    """What EHLO/HELO and AUTH established.  A new one after STARTTLS, which
    forgets everything said before it (RFC 3207 section 4.2)."""

    __slots__ = ("host_name", "extended_smtp", "mailbox")

    def __init__(self) -> None:
        self.host_name: str | None = None
        self.extended_smtp = False
        self.mailbox = None  # the authenticated MailboxEntry


class Envelope:
    """One mail transaction: what MAIL and RCPT said."""

    __slots__ = ("mail_from", "rcpt_tos", "smtp_utf8", "options", "rcpt_attempts", "unverified")

    def __init__(self) -> None:
        self.mail_from: str | None = None
        self.rcpt_tos: list[str] = []
        self.smtp_utf8 = False
        self.options: MailOptions | None = None
        self.rcpt_attempts = 0
        self.unverified = ""  # the port-25 verdict that no notice goes to this sender


# HELP: each command's syntax, and the attribute that says whether the port offers it now.
_SYNTAX: dict[str, tuple[str, str, str | None]] = {
    "AUTH": ("AUTH <mechanism> [initial-response]", "", "auth_offered"),
    "DATA": ("DATA", "", None),
    "EHLO": ("EHLO hostname", "", None),
    "EXPN": ("EXPN <address>", "", None),
    "HELO": ("HELO hostname", "", None),
    "HELP": ("HELP [command]", "", None),
    "MAIL": ("MAIL FROM: <address>", " [SP <mail-parameters>]", None),
    "NOOP": ("NOOP [ignored]", "", None),
    "QUIT": ("QUIT", "", None),
    "RCPT": ("RCPT TO: <address>", "", None),
    "RSET": ("RSET", "", None),
    "STARTTLS": ("STARTTLS", "", "starttls_offered"),
    "VRFY": ("VRFY <address>", "", None),
}

_OK = b"250 2.0.0 OK\r\n"
_SENDER_OK = "250 2.1.0 Sender <{}> OK\r\n"
_RECIPIENT_OK = "250 2.1.5 Recipient <{}> OK\r\n"
_GO_AHEAD = b"354 End data with <CR><LF>.<CR><LF>\r\n"


class RelaySMTP(LineConnection):
    """One client connection of one listener (see the module docstring)."""

    def __init__(self, ctx: RelayContext, listener: Listener, *, starttls: Any = None,
                 implicit_tls: bool = False) -> None:
        super().__init__(asyncio.get_running_loop())
        relay = ctx.config.relay
        self.ctx = ctx
        self.listener = listener
        self.hostname = ctx.config.hostname
        self.tls_context = starttls
        self.tls_active = implicit_tls
        self.max_line = max(relay.max_line_length + 3, PATH_COMMAND_LIMIT)
        self.auth_line_limit = relay.max_line_length + 3
        self.session = Session()
        self.envelope = Envelope()
        self.peer_ip = ""
        self.log = log
        self.busy = False  # inside DATA: do not cut the connection on shutdown
        self.auth_offered = False  # what EHLO advertises and HELP lists (set per connection and after STARTTLS)
        self.starttls_offered = False
        self.defences: ConnectionDefences | None = None  # port 25 only
        self._admitted = False
        self._refused = False
        self._commands = 0
        self._bogus = 0
        self._auth_failures = 0
        self._auth_summary = ""  # the last message's SPF/DKIM/DMARC results, for its log line
        self._last_input = 0.0
        self._connected_at = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    # -- replies -------------------------------------------------------------------
    def reply(self, text: str) -> None:
        """One reply (lines joined by CRLF), with an enhanced status code
        where it lacks one and no control character echoed back."""
        if not text.isprintable():
            text = "\r\n".join(_printable(line) for line in text.split("\r\n"))
        self.send((with_status(text) + "\r\n").encode("utf-8", "surrogateescape"))

    def _refuse(self, reply: Reply, *, sender: str | None = None, recipient: str = "") -> None:
        self.ctx.count_rejection(reply.reason)
        self._note_refusal(reply, sender=sender, recipient=recipient)
        self.reply(str(reply))

    def _note_refusal(self, reply: Reply, *, sender: str | None = None, recipient: str = "") -> None:
        if self.ctx.backscatter is not None:
            self.ctx.backscatter.refusals.record(
                reply, sender=self.envelope.mail_from or "" if sender is None else sender, recipient=recipient,
                client=self.peer_ip)

    def _close(self) -> None:
        self.close_after_reply()

    def _ssl_object(self):
        return self.transport.get_extra_info("ssl_object") if self.transport is not None else None

    def _offers(self) -> None:
        tls = self.tls_active
        self.starttls_offered = self.tls_context is not None and not tls
        self.auth_offered = self.listener.requires_auth and plaintext_login_allowed(
            self.ctx.config.auth, self.peer_ip, tls)

    def _reset_envelope(self) -> None:
        self.envelope = Envelope()

    def failed(self, error: BaseException) -> None:
        self.log.error("session_error", error=type(error).__name__, detail=str(error)[:200], exc_info=error)
        self.reply("451 4.3.0 Internal error; try again later")

    def too_long(self) -> None:
        self.reply("500 5.5.2 Command line too long")

    def line_limit(self, line: bytes) -> int:
        if self.session.extended_smtp:
            verb = line[:5].upper()
            if verb == b"MAIL " or verb == b"RCPT ":
                return PATH_COMMAND_LIMIT
            if verb == b"AUTH ":
                return self.auth_line_limit
        return COMMAND_LIMIT

    # -- connection (asyncio's protocol callbacks) -------------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[override]
        peer = transport.get_extra_info("peername")
        self.peer_ip = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer or "")
        self.log = log.bind(listener=self.listener.value, peer=self.peer_ip)
        refusal = self.ctx.gate.admit(self.peer_ip)
        if refusal is not None:
            self._refused = True
            self.ctx.metrics.inc(ctxmod.CONNECTIONS_REFUSED, reason=refusal)
            self.ctx.count_rejection("connection_limit")
            self.log.info("connection_refused", reason=refusal)
            transport.write(f"421 4.7.0 {self.hostname} {refusal}; try again later\r\n".encode())
            transport.close()
            return
        super().connection_made(transport)
        self._admitted = True
        ctx = self.ctx
        ctx.sessions.add(self)
        ctx.metrics.inc(ctxmod.CONNECTIONS, listener=self.listener.value)
        ctx.metrics.set(ctxmod.CONNECTIONS_OPEN, ctx.gate.total)
        if ctx.defences is not None and self.listener is Listener.SMTP:
            self.defences = ctx.defences.connection(self.peer_ip)
            self.defences.connected()  # DNSBL lookups start now; their verdict is awaited at RCPT
        self._offers()
        self._last_input = self._connected_at = self.loop.time()
        first = self._last_input + ctx.config.relay.timeout_seconds
        self._idle_timer = self.loop.call_at(min(first, self._login_deadline() or first), self._idle_check)
        transport.write(f"220 {self.hostname} ESMTP correo\r\n".encode())

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        super().connection_lost(error)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        task = self._task
        if task is not None and not self.busy:  # a check or a login nobody waits for now; a hand-off finishes
            task.cancel()
        if self._admitted:
            self._admitted = False
            ctx = self.ctx
            ctx.gate.release(self.peer_ip)
            ctx.sessions.discard(self)
            ctx.metrics.set(ctxmod.CONNECTIONS_OPEN, ctx.gate.total)
            ctx.metrics.observe(ctxmod.SESSION_SECONDS, self.loop.time() - self._connected_at,
                                listener=self.listener.value)
            if self.defences is not None:
                self.defences.close()

    def eof_received(self) -> bool:
        if self._refused:
            return False
        if self._sink is not None and not self._sink.done.done():
            # The client closed its side in the middle of a message: it can
            # never send the final dot, so the transfer is over now (not at
            # the idle timeout, holding the connection slot and the message).
            self.log.info("data_aborted", received=self._sink.reader.received)
            self._sink.done.set_result(False)
        return super().eof_received()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._last_input = self.loop.time()
        super().data_received(data)

    def _idle_check(self) -> None:
        """Idle too long: say so (RFC 5321 section 4.5.3.2 allows the 421), then close."""
        self._idle_timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        now = self.loop.time()
        timeout = self.ctx.config.relay.timeout_seconds
        deadline = self._last_input + timeout
        login = self._login_deadline()
        if login is not None and login <= now + 0.001:  # submission: no login in time, busy or not
            self.log.info("login_timeout")
            message = f"no login within {self.ctx.config.auth.login_timeout_seconds} seconds"
        elif deadline > now + 0.001 or (self.busy and self._sink is None):  # handing off: the server's time
            self._idle_timer = self.loop.call_at(max(min(deadline, login or deadline), now + 0.5), self._idle_check)
            return
        else:
            self.log.info("session_timeout")
            message = "timeout exceeded"
        try:
            transport.write(f"421 4.4.2 {self.hostname} Error: {message}\r\n".encode())
        except Exception:  # noqa: BLE001 - the transport may already be failing
            pass
        transport.close()

    def _login_deadline(self) -> float | None:
        """Where a login is needed (submission): when a client that has not
        logged in is disconnected (``auth.loginTimeoutSeconds`` after it
        connected, as Dovecot's login processes); None elsewhere, or once
        logged in."""
        if not self.listener.requires_auth or self.session.mailbox is not None:
            return None
        return self._connected_at + self.ctx.config.auth.login_timeout_seconds

    # -- the command table -----------------------------------------------------------
    def command(self, line: bytes) -> Awaitable[None] | None:
        if not line:
            self.reply("500 5.5.2 Error: bad syntax")
            return None
        verb_bytes, _, arg_bytes = line.partition(b" ")
        try:
            verb = verb_bytes.upper().decode("ascii")
        except UnicodeDecodeError:
            self.reply("500 5.5.2 Error: bad syntax")
            return None
        method = _COMMANDS.get(verb)
        if method is None:
            self._bogus += 1
            if self._bogus >= BOGUS_LIMIT:
                self.log.info("too_many_unrecognized_commands")
                self.reply("502 5.5.1 Too many unrecognized commands, goodbye.")
                self._close()
                return None
            self.reply(f'500 5.5.2 Error: command "{verb[:40]}" not recognized')
            return None
        self._commands += 1
        limit = self.ctx.config.relay.max_commands_per_session
        if limit and self._commands > limit:
            self.ctx.count_rejection("too_many_commands")
            self.reply("421 4.7.0 Too many commands in one session; closing connection")
            self._close()
            return None
        arg = arg_bytes.strip().decode("utf-8", "surrogateescape") if arg_bytes else None
        if arg is not None and "\x00" in arg:
            self.ctx.count_rejection("nul")
            self.reply("500 5.5.2 NUL characters are not allowed in commands")
            return None
        return method(self, arg or None)

    # -- greeting and capabilities ------------------------------------------------
    def smtp_EHLO(self, hostname: str | None) -> None:
        if not hostname:
            self.reply("501 5.5.4 Syntax: EHLO hostname")
            return
        self._reset_envelope()
        self.session.extended_smtp = True
        self.session.host_name = hostname
        lines = [f"{self.hostname}", "PIPELINING", f"SIZE {self.ctx.config.relay.max_message_bytes}",
                 "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"]
        if self.starttls_offered:
            lines.append("STARTTLS")
        if self.auth_offered:
            lines.append("AUTH PLAIN LOGIN")
        self.send("".join(f"250{'-' if i < len(lines) - 1 else ' '}{line}\r\n"
                          for i, line in enumerate(lines)).encode())

    def smtp_HELO(self, hostname: str | None) -> None:
        if not hostname:
            self.reply("501 5.5.4 Syntax: HELO hostname")
            return
        self._reset_envelope()
        self.session.extended_smtp = False
        self.session.host_name = hostname
        self.send(f"250 {self.hostname}\r\n".encode())

    def smtp_NOOP(self, arg: str | None) -> None:
        self.send(_OK)

    def smtp_RSET(self, arg: str | None) -> None:
        if arg:
            self.reply("501 5.5.4 Syntax: RSET")
            return
        self._reset_envelope()
        self.send(_OK)

    def smtp_QUIT(self, arg: str | None) -> None:
        if arg:
            self.reply("501 5.5.4 Syntax: QUIT")
            return
        self.send(b"221 2.0.0 Bye\r\n")
        self._close()

    def smtp_VRFY(self, arg: str | None) -> None:
        if not arg:
            self.reply("501 5.5.4 Syntax: VRFY <address>")
            return
        self.reply("252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery")

    def smtp_EXPN(self, arg: str | None) -> None:
        self.reply("502 5.5.1 EXPN not implemented")

    def smtp_HELP(self, arg: str | None) -> None:
        code = 250
        if arg:
            found = _SYNTAX.get(arg.upper())
            if found is not None and (found[2] is None or getattr(self, found[2])):
                text = found[0] + (found[1] if self.session.extended_smtp else "")
                self.reply(f"250 2.0.0 Syntax: {text}")
                return
            code = 501
        offered = sorted(verb for verb, (_, _, when) in _SYNTAX.items() if when is None or getattr(self, when))
        self.reply(f"{code} {'2.0.0' if code == 250 else '5.5.4'} Supported commands: {' '.join(offered)}")

    def smtp_STARTTLS(self, arg: str | None) -> Awaitable[None] | None:
        if arg:
            self.reply("501 5.5.4 Syntax: STARTTLS")
            return None
        if self.tls_active:
            self.reply("503 5.5.1 TLS is already active")
            return None
        if self.tls_context is None:
            self.reply("454 4.7.0 TLS not available")
            return None
        return self._starttls()

    async def _starttls(self) -> None:
        self.reply("220 2.0.0 Ready to start TLS")
        if not await self.upgrade(self.tls_context, TLS_HANDSHAKE_SECONDS):
            return
        self.tls_active = True
        self.session = Session()  # everything said before TLS is forgotten (RFC 3207 section 4.2)
        self._reset_envelope()
        self._offers()

    # -- AUTH (RFC 4954; PLAIN RFC 4616, LOGIN) -----------------------------------------
    async def _challenge(self, text: str) -> bytes | None:
        """Send a 334 challenge, return the client's answer, base64-decoded
        (None if it aborted or sent nonsense; the reply has then been sent)."""
        self.send(f"334 {base64.b64encode(text.encode()).decode()}\r\n".encode())
        try:
            line = await self.read_line(self.auth_line_limit)
        except LineTooLong:
            self.reply("501 5.5.2 Authentication line too long")
            return None
        if line is None:  # the connection went away
            return None
        if line == b"*":
            self.reply("501 5.7.0 Authentication aborted")
            return None
        try:
            return base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            self.reply("501 5.5.2 Can't decode base64")
            return None

    async def _sasl_credentials(self, mechanism: str, initial: str | None) -> tuple[str, str] | None:
        if mechanism == "PLAIN":
            if initial is None:
                answer = await self._challenge("")
                if answer is None:
                    return None
                initial = base64.b64encode(answer).decode("ascii")
            try:
                _authz, user, password = decode_sasl_plain("" if initial == "=" else initial)
            except SaslError as exc:
                self.reply(f"501 5.5.2 Invalid PLAIN response: {exc}")
                return None
            return user, password
        # LOGIN: username, then password, each base64
        if initial is not None:
            try:
                user_raw: bytes | None = base64.b64decode(initial, validate=True)
            except (binascii.Error, ValueError):
                self.reply("501 5.5.2 Cannot decode base64")
                return None
        else:
            user_raw = await self._challenge("Username:")
        if user_raw is None:
            return None
        password_raw = await self._challenge("Password:")
        if password_raw is None:
            return None
        try:
            return user_raw.decode("utf-8"), password_raw.decode("utf-8")
        except UnicodeDecodeError:
            self.reply("501 5.5.2 Credentials are not UTF-8")
            return None

    def smtp_AUTH(self, arg: str | None) -> Awaitable[None] | None:
        session = self.session
        if not self.listener.requires_auth:
            self._refuse(Reply(503, "5.5.1", "AUTH is not available on this port; use submission",
                               "auth_not_offered"))
            return None
        if not session.host_name or not session.extended_smtp:
            self.reply("503 5.5.1 Send EHLO first")
            return None
        if session.mailbox is not None:
            self.reply("503 5.5.1 Already authenticated")
            return None
        if self.envelope.mail_from is not None:
            self.reply("503 5.5.1 AUTH is not permitted during a mail transaction")
            return None
        if not plaintext_login_allowed(self.ctx.config.auth, self.peer_ip, self.tls_active):
            self._refuse(Reply(538, "5.7.11", "Encryption required for requested authentication mechanism "
                               "(use STARTTLS first)", "auth_without_tls"))
            return None
        parts = (arg or "").split()
        if not parts or len(parts) > 2:
            self.reply("501 5.5.4 Syntax: AUTH mechanism [initial-response]")
            return None
        mechanism = parts[0].upper()
        if mechanism not in ("PLAIN", "LOGIN"):
            self.reply("504 5.5.4 Unrecognized authentication type")
            return None
        return self._auth(mechanism, parts[1] if len(parts) == 2 else None)

    async def _auth(self, mechanism: str, initial: str | None) -> None:
        creds = await self._sasl_credentials(mechanism, initial)
        if creds is None:
            return
        user, password = creds
        session = self.session
        result = await check_login(self.ctx.directory.get(), self.ctx.throttle, self.peer_ip, user, password)
        if result.ok:
            session.mailbox = result.mailbox
            self._auth_failures = 0
            self.ctx.metrics.inc(ctxmod.AUTH, result="ok")
            self.log.info("auth_ok", mechanism=mechanism, mailbox=result.mailbox.address)
            self.reply("235 2.7.0 Authentication successful")
            return
        self._auth_failures += 1
        self.ctx.metrics.inc(ctxmod.AUTH, result=result.failure or "failed")
        self.ctx.count_rejection("auth_failed")
        self.log.info("auth_failed", mechanism=mechanism, user=user[:200], failure=result.failure,
                      reason=result.detail or result.failure)
        if result.failure == "suspended":
            self.reply("535 5.7.8 Authentication refused: the mailbox is suspended")
        else:
            hint = wait_hint(result.retry_after)
            self.reply("535 5.7.8 Authentication credentials invalid" + (f".{hint}" if hint else ""))
        limit = self.ctx.config.auth.max_failures_per_session
        if limit and self._auth_failures >= limit:
            self.reply("421 4.7.0 Too many failed authentication attempts; closing connection")
            self._close()

    # -- the mail transaction --------------------------------------------------------------
    def _transaction_refusal(self) -> Reply | None:
        if not self.session.host_name:
            return Reply(503, "5.5.1", "Send HELO or EHLO first")
        if self.listener.requires_auth and self.session.mailbox is None:
            return Reply(530, "5.7.0", "Authentication required", "auth_required")
        return None

    def smtp_MAIL(self, arg: str | None) -> Awaitable[None] | None:
        refusal = self._transaction_refusal()
        if refusal:
            self._refuse(refusal)
            return None
        if self.envelope.mail_from is not None:
            self.reply("503 5.5.1 Nested MAIL command")
            return None
        rest = split_keyword(arg, "FROM:")
        if rest is None:
            self.reply("501 5.5.4 Syntax: MAIL FROM:<address> [parameters]")
            return None
        relay = self.ctx.config.relay
        try:
            sender, param_text = parse_path(rest, allow_null=True)
            params = parse_params(param_text)
        except PathError as exc:
            self._refuse(exc.reply)
            return None
        options = check_mail_params(params, extended=self.session.extended_smtp, max_bytes=relay.max_message_bytes)
        if isinstance(options, Reply):
            self._refuse(options)
            return None
        refusal = sender and needs_smtputf8(sender, options.smtputf8)
        if refusal:
            self._refuse(refusal)
            return None
        if not self.ctx.limiter.allowed(self.peer_ip):
            self._refuse(self.ctx.limiter.rate_limited_reply(self.peer_ip))
            return None
        address = sender.address if sender else ""
        refusal = check_sender(self.listener, self.session.mailbox, sender, self.ctx.directory.get())
        if refusal:
            self.log.info("sender_refused", sender=address, reason=refusal.reason)
            self._refuse(refusal)
            return None
        if self.defences is not None:  # SPF: known already (the cache), or awaited
            known, refusal = self.defences.at_mail_known(self.session.host_name or "", address)
            if not known:
                return self._mail_checked(address, options)
            self._mail_judged(address, options, refusal)
            return None
        self._mail_accepted(address, options)
        return None

    async def _mail_checked(self, address: str, options: MailOptions) -> None:
        refusal = await self.defences.at_mail(self.session.host_name or "", address)
        self._mail_judged(address, options, refusal)

    def _mail_judged(self, address: str, options: MailOptions, refusal: Reply | None) -> None:
        self.ctx.count_verdicts(self.defences.mail_verdicts())
        if refusal:
            self.log.info("sender_refused", sender=address, reason=refusal.reason, reply=str(refusal))
            self._refuse(refusal, sender=address)
            return
        self._mail_accepted(address, options)

    def _mail_accepted(self, address: str, options: MailOptions) -> None:
        envelope = self.envelope
        envelope.mail_from = address
        envelope.smtp_utf8 = options.smtputf8
        envelope.options = options
        envelope.rcpt_attempts = 0
        self.send(_SENDER_OK.format(address).encode("utf-8", "surrogateescape"))

    def smtp_RCPT(self, arg: str | None) -> Awaitable[None] | None:
        refusal = self._transaction_refusal()
        if refusal:
            self._refuse(refusal)
            return None
        envelope = self.envelope
        if envelope.mail_from is None:
            self.reply("503 5.5.1 Need MAIL command first")
            return None
        envelope.rcpt_attempts += 1
        rest = split_keyword(arg, "TO:")
        if rest is None:
            self.reply("501 5.5.4 Syntax: RCPT TO:<address>")
            return None
        config = self.ctx.config
        try:
            rcpt, param_text = parse_path(rest, allow_null=False)
            params = parse_params(param_text)
        except PathError as exc:
            self._refuse(exc.reply)
            return None
        assert rcpt is not None
        refusal = check_rcpt_params(params) or needs_smtputf8(rcpt, envelope.smtp_utf8)
        if refusal:
            self._refuse(refusal)
            return None
        rcpt = resolve_postmaster(rcpt, config)
        if len(envelope.rcpt_tos) >= config.relay.max_recipients:
            self._refuse(Reply(452, "4.5.3", f"Too many recipients (at most {config.relay.max_recipients} "
                               "per message)", "too_many_recipients"))
            return None
        if self.defences is not None:  # the DNSBL verdict (come already, or awaited), SRS bounce addresses
            if not self.defences.rcpt_ready():
                return self._rcpt_checked(rcpt)
            self._rcpt_defended(rcpt, self.defences.at_rcpt_now(rcpt.address))
            return None
        self._rcpt_judged(rcpt)
        return None

    async def _rcpt_checked(self, rcpt) -> None:
        self._rcpt_defended(rcpt, await self.defences.at_rcpt(rcpt.address))

    def _rcpt_defended(self, rcpt, outcome) -> None:
        if outcome.reply is not None:
            self.log.info("recipient_refused", recipient=rcpt.address, reason=outcome.reply.reason,
                          reply=str(outcome.reply))
            self._refuse(outcome.reply, recipient=rcpt.address)
            return
        if outcome.srs:  # a bounce to a sender we forwarded for: it goes back to them
            self.log.info("srs_bounce", recipient=rcpt.address, to=outcome.recipient)
            envelope = self.envelope
            if outcome.recipient.lower() not in (r.lower() for r in envelope.rcpt_tos):
                envelope.rcpt_tos.append(outcome.recipient)
            self.send(_RECIPIENT_OK.format(rcpt.address).encode("utf-8", "surrogateescape"))
            return
        self._rcpt_judged(rcpt)

    def _rcpt_judged(self, rcpt) -> None:
        """The recipient rules and the backscatter checks; then the recipient is in."""
        config = self.ctx.config
        refusal = check_recipient(self.listener, self.session.mailbox is not None, rcpt, config,
                                  self.ctx.directory.get())
        if refusal:
            self.log.info("recipient_refused", recipient=rcpt.address, reason=refusal.reason)
            self._refuse(refusal, recipient=rcpt.address)
            return
        envelope = self.envelope
        if self.ctx.backscatter is not None:  # forwards to broken mailboxes, quota
            found = self.ctx.backscatter.checks.at_rcpt(self.ctx.directory.get(), rcpt.address,
                                                        envelope.options.size if envelope.options else None)
            if found is not None:
                self.log.info("recipient_refused", recipient=rcpt.address, reason=found[0].reason, target=found[1])
                self._refuse(found[0], recipient=rcpt.address)
                return
        address = rcpt.address
        if not envelope.rcpt_tos:
            envelope.rcpt_tos.append(address)
        elif address.lower() not in (r.lower() for r in envelope.rcpt_tos):
            envelope.rcpt_tos.append(address)
        self.send(_RECIPIENT_OK.format(address).encode("utf-8", "surrogateescape"))

    def smtp_DATA(self, arg: str | None) -> Awaitable[None] | None:
        refusal = self._transaction_refusal()
        envelope = self.envelope
        if refusal:
            self._refuse(refusal)
        elif arg:
            self.reply("501 5.5.4 Syntax: DATA")
        elif envelope.mail_from is None:
            self.reply("503 5.5.1 Need MAIL command first")
        elif not envelope.rcpt_tos:
            if envelope.rcpt_attempts:
                self.reply("554 5.5.1 No valid recipients")
            else:
                self.reply("503 5.5.1 Need RCPT command first")
        else:
            self.send(_GO_AHEAD)
            return self._message()
        return None

    async def _message(self) -> None:
        """The message (read by :mod:`.connection` into a sink), its checks,
        the hand-off, the reply."""
        relay = self.ctx.config.relay
        reader = MessageReader(relay.max_message_bytes, relay.max_line_length,
                               spool_over=relay.data_in_memory_bytes, spool_dir=relay.data_spool_dir or None)
        sink = DataSink(reader, self.loop.create_future())
        inflight = 0
        self.busy = True
        try:
            self.start_message(sink)
            if not await sink.done:  # the connection went away first
                return
            self.ctx.metrics.inc(ctxmod.BYTES, reader.received, listener=self.listener.value)
            refusal = reader.refusal()
            if refusal is not None:
                self.log.info("message_refused", reason=refusal.reason, size=reader.size)
                self._reset_envelope()
                self._refuse(refusal)
                return
            if self.ctx.inflight_bytes and self.ctx.inflight_bytes + reader.size > relay.max_inflight_bytes:
                self.log.warning("message_deferred_memory", size=reader.size, inflight=self.ctx.inflight_bytes)
                self._reset_envelope()
                self._refuse(Reply(452, "4.3.1", "Insufficient system resources for this message now; "
                                   "try again later", "inflight_limit"))
                return
            inflight = reader.size
            self.ctx.inflight_bytes += inflight
            try:
                content = reader.content()
                key = deliverykeys.message_key(self.envelope.mail_from or "", self.envelope.rcpt_tos, content)
                checked = await self._defend(content) if self.defences is not None else content
                if not isinstance(checked, Reply) and self.ctx.backscatter is not None:  # room left
                    checked = self._room_check(checked) or checked
                reply = checked if isinstance(checked, Reply) else await self._accept(checked, key)
            except Exception as exc:  # a bug must not leave the transaction half-open
                self.log.error("accept_failed", error=type(exc).__name__, exc_info=exc)
                reply = Reply(451, "4.3.0", "Internal error; message not accepted, try again later",
                              "internal_error")
                self.ctx.count_rejection(reply.reason)
            self._reset_envelope()
            self.reply(str(reply))
        finally:
            self.ctx.inflight_bytes -= inflight
            reader.close()  # the message's memory or temporary file, however the transfer ended
            if self._sink is sink:
                self._sink = None
            self.busy = False

    async def _defend(self, content: bytes) -> bytes | Reply:
        """The end-of-DATA defences: the refusal, or the message to hand over."""
        envelope = self.envelope
        outcome = await self.defences.at_data(content, ScanEnvelope(
            envelope.mail_from or "", list(envelope.rcpt_tos), ip=self.peer_ip,
            helo=self.session.host_name or "", hostname=self.hostname))
        verdicts = outcome.verdicts()
        self.ctx.count_verdicts(verdicts)
        # For message_accepted, the one info line of the message (the checks log at debug).
        self._auth_summary = " ".join(f"{k}={v}" for k, v in self.defences.mail_verdicts()[:1] + verdicts)
        if outcome.reply is not None:
            self.ctx.count_rejection(outcome.reply.reason)
            self._note_refusal(outcome.reply, recipient=envelope.rcpt_tos[0] if envelope.rcpt_tos else "")
            self.log.info("message_refused", reason=outcome.reply.reason, reply=str(outcome.reply),
                          sender=envelope.mail_from)
            return outcome.reply
        envelope.unverified = outcome.unverified  # goes to the queue: no notice for this sender
        if outcome.junk:
            self.log.info("message_for_junk", reasons=list(outcome.reasons), sender=envelope.mail_from)
        return outcome.message

    def _room_check(self, content: bytes) -> Reply | None:
        """A message larger than the room left in a recipient's mailbox: refused now, not bounced later."""
        envelope = self.envelope
        refusal = self.ctx.backscatter.checks.at_data(self.ctx.directory.get(), list(envelope.rcpt_tos), len(content))
        if refusal is not None:
            self.ctx.count_rejection(refusal.reason)
            self._note_refusal(refusal, recipient=envelope.rcpt_tos[0] if envelope.rcpt_tos else "")
            self.log.info("message_refused", reason=refusal.reason, reply=str(refusal), sender=envelope.mail_from)
        return refusal

    async def _accept(self, content: bytes, key: str | None = None) -> Reply:
        """Stamp, sign and hand over one message; the reply for the client.
        ``key``: the message key of what the client sent (:mod:`correo_server.deliverykeys`)."""
        envelope, session = self.envelope, self.session
        relay_id = new_id()
        options = envelope.options
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
                                                   body=options.body if options else None, ident=relay_id,
                                                   key=key,
                                                   params=verdictmod.mail_params(getattr(envelope, "unverified", "")))
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
            queue_id = getattr(outcome, "queued_as", None) or relay_id  # the same id unless the queue chose its own
            self.log.info("message_accepted", queue_id=queue_id,
                          **({"relay_id": relay_id} if queue_id != relay_id else {}),
                          sender=envelope.mail_from, recipients=len(envelope.rcpt_tos), size=size,
                          protocol=protocol, **({"auth": self._auth_summary} if self._auth_summary else {}))
        else:
            self.ctx.count_rejection(reply.reason)
            self.log.info("message_not_accepted", id=relay_id, reply=str(reply), sender=envelope.mail_from)
        return reply


_COMMANDS: dict[str, Callable[[RelaySMTP, str | None], Awaitable[None] | None]] = {
    verb: getattr(RelaySMTP, f"smtp_{verb}") for verb in _SYNTAX}
