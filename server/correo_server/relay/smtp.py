"""The relay's SMTP protocol: aiosmtpd at the public edge, with correo's
commands on top.

:class:`RelaySMTP` keeps aiosmtpd's connection handling (the command loop,
STARTTLS, the unknown-command budget, NOOP/RSET/QUIT/VRFY/HELP) and replaces
the commands whose rules are correo's: EHLO/HELO (what is advertised where;
HELP lists the same: no AUTH where AUTH is refused), AUTH (checked against
the directory through :func:`correo_server.login.check_login`), MAIL, RCPT
and DATA (decided by :mod:`.policy`, read by :mod:`.data`, stamped by
:mod:`.received`, signed by :mod:`.dkim`, handed over by :mod:`.handoff`).

It uses aiosmtpd only the documented way (``smtp_<VERB>`` methods, the
handler's hooks, ``push``, ``challenge_auth``, ``_create_session``,
``_create_envelope``, ``line_length_limit``; aiosmtpd's range is pinned in
``pyproject.toml``) and asyncio's protocol callbacks, which aiosmtpd's
``SMTP`` documents itself as implementing:

* ``connection_made``: the connection limits are applied before the
  greeting (``421 4.7.0`` and close); where issue 11's connect-time checks
  would start;
* ``data_received``: every octet a client sends passes here first.  The
  relay notes the time (its own idle timer says ``421 4.4.2`` after
  ``timeout_seconds`` without input, as aiosmtpd's does not) and watches the
  command stream for a ``DATA`` line: what follows it is held back until
  :meth:`RelaySMTP.smtp_DATA` has answered.  After a ``354`` it is the
  message, read by the relay itself in large pieces into a
  :class:`~.data.MessageReader` (which keeps a message past
  ``data_in_memory_bytes`` in an unlinked temporary file, and is closed
  however the transfer ends), never by aiosmtpd line by line; after a refusal it goes to aiosmtpd as
  commands again.  So the end of the message is found where the relay's
  rules say (``<CRLF>.<CRLF>`` only) and pipelined commands after it are
  read as commands.

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

Every reply goes through :meth:`RelaySMTP.push`, which adds an enhanced
status code where one is missing (:func:`~correo_server.wire.replies.with_status`).
Every command counts towards ``maxCommandsPerSession``; a NUL byte in a command is
refused.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import secrets
import time
from datetime import datetime, timezone
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, Session, TLSSetupException, syntax

from .. import deliverykeys, logs
from ..backscatter import verdict as verdictmod
from ..defences import ConnectionDefences
from ..guard import plaintext_login_allowed
from ..login import SaslError, check_login, decode_sasl_plain, wait_hint
from ..scanning.rspamd import Envelope as ScanEnvelope
from ..wire.data import END
from ..wire.paths import PathError, parse_params, parse_path, split_keyword
from ..wire.replies import Reply, with_status
from . import context as ctxmod
from .context import RelayContext
from .data import MessageReader
from .handoff import HandoffError, client_reply
from .policy import (Listener, check_mail_params, check_rcpt_params, check_recipient, check_sender,
                     needs_smtputf8, resolve_postmaster)
from .received import TLSInfo, protocol_name, received_header

log = logs.get(__name__)

_ID_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXZ"
AIOSMTPD_TIMEOUT = 24 * 3600.0  # aiosmtpd's own idle timer: a backstop; the relay's says 421 first
HOLD_LIMIT = 1024 * 1024  # octets held after a DATA line before reading pauses


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


def _could_be_data(line: bytes) -> bool:
    """Could this unfinished command line still turn out to be ``DATA``?"""
    head = line[:4].upper()
    if len(line) <= 4:
        return b"DATA".startswith(head)
    rest = line[4:]
    return head == b"DATA" and (not rest.strip(b"\r") or (rest[:1] == b" " and not rest.strip()))


def data_line_end(chunk: bytes, tail: bytes) -> tuple[int, bytes]:
    """Where the first command line that is ``DATA`` ends in ``chunk`` (the
    offset after its LF), or -1; and the new ``tail``.  ``tail`` stands for
    the unfinished line before ``chunk``: itself while it could still become
    ``DATA``, else one NUL.  Lines end at LF and the verb is what aiosmtpd
    makes of it: ``DATA``, any case, nothing but blanks after it."""
    probe = tail + chunk
    start = 0
    if b"DATA" in probe.upper():
        while True:
            end = probe.find(b"\n", start)
            if end < 0:
                break
            verb, _, rest = probe[start:end].rstrip(b"\r\n").partition(b" ")
            if verb.upper() == b"DATA" and not rest.strip():
                return end + 1 - len(tail), b""
            start = end + 1
    else:
        start = probe.rfind(b"\n") + 1
    unfinished = probe[start:]
    return -1, (unfinished if _could_be_data(unfinished) else b"\x00")


class DataSink:
    """The message after ``354``, as it arrives: passed to a
    :class:`~.data.MessageReader` up to the end marker (held back: the
    octets that could be the start of one), then done."""

    def __init__(self, reader: MessageReader, done: asyncio.Future) -> None:
        self.reader = reader
        self.done = done
        self.pending = b"\r\n"  # not passed on yet; the first two are a virtual line end
        self.virtual = 2

    def feed(self, data: bytes) -> bytes | None:
        """Take what arrived; returns what follows the end marker once it
        has come (None before)."""
        buf = self.pending + data
        i = buf.find(END)
        if i >= 0:
            body, rest, self.pending = buf[:i + 2], buf[i + 5:], b""
        else:
            k = 4
            while k and not buf.endswith(END[:k]):
                k -= 1
            body, rest, self.pending = buf[:len(buf) - k], None, buf[len(buf) - k:]
        if self.virtual:
            cut = min(self.virtual, len(body))
            body, self.virtual = body[cut:], self.virtual - cut
        if body:
            self.reader.feed_bytes(body)
        if rest is not None:
            self.reader.finish()
            if not self.done.done():
                self.done.set_result(True)
        return rest


class RelaySession(Session):
    """aiosmtpd's session plus who logged in.  A new one is made after
    STARTTLS, which forgets everything said before it (RFC 3207 section 4.2)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.mailbox = None  # the authenticated MailboxEntry
        self.mail_options = None  # policy.MailOptions of the current transaction
        self.rcpt_attempts = 0


class _Hooks:
    """aiosmtpd's handler: a command that raises is logged and answered 451."""

    def __dir__(self) -> list[str]:
        # aiosmtpd looks for handle_<HOOK> and auth_<MECH> at every
        # connection; listing only ours spares it the rest (see RelaySMTP).
        return ["handle_exception"]

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
        task = asyncio.current_task()
        if task is not self._handler and task is not None:  # aiosmtpd's command loop (a new one after STARTTLS)
            self._handler = task
            task.add_done_callback(self._handler_done)
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


def _guarded(cls):
    """Every ``smtp_<VERB>`` of the class, aiosmtpd's included, guarded once
    (at class creation, not per connection)."""
    for name in dir(cls):
        if name.startswith("smtp_"):
            setattr(cls, name, _guard(getattr(cls, name)))
    return cls


class _Limits(dict):
    """Command line limits by verb; any other verb gets aiosmtpd's default
    without being added (one table is shared by every session)."""

    def __missing__(self, verb: str) -> int:
        return SMTP.command_size_limit


_EXTENSION_NAMES: dict[type, list[str]] = {}  # what RelaySMTP.__dir__ lists, by class


@functools.lru_cache(maxsize=8)
def _command_limits(line_length_limit: int) -> _Limits:
    """aiosmtpd's per-command line limits for the relay (read, never changed)."""
    return _Limits({"MAIL": 1024, "RCPT": 1024, "AUTH": line_length_limit})


@_guarded
class RelaySMTP(SMTP):
    def __init__(self, ctx: RelayContext, listener: Listener, *, starttls: Any = None,
                 implicit_tls: bool = False) -> None:
        relay = ctx.config.relay
        # Read buffer limit (aiosmtpd's documented class attribute, read when
        # it builds its reader): the longest allowed line, its CRLF and a dot.
        self.line_length_limit = relay.max_line_length + 3
        self.ctx = ctx
        super().__init__(_HOOKS, data_size_limit=relay.max_message_bytes, enable_SMTPUTF8=True,
                         decode_data=False, hostname=ctx.config.hostname, ident="ESMTP correo",
                         tls_context=starttls, timeout=AIOSMTPD_TIMEOUT, auth_require_tls=True,
                         loop=asyncio.get_running_loop())
        # The rest after aiosmtpd's __init__, which looks at every attribute
        # there is (inspect.getmembers): each one set before costs there.
        self.listener = listener
        self._implicit_tls = implicit_tls
        self._greeted = False
        self._admitted = False
        self._refused = False
        self._commands = 0
        self._auth_failures = 0
        self._in_auth = False
        self._auth_eol = False  # the AUTH answer's line end has come
        self._skip_line = False  # dropping the rest of an over-long AUTH answer
        self.peer_ip = ""
        self.busy = False  # inside DATA: do not cut the connection on shutdown
        self.auth_offered = False  # what EHLO advertises and HELP lists (set per connection and after STARTTLS)
        self.starttls_offered = False
        self.log = log
        self._tail = b""  # the unfinished command line so far
        self._held: bytearray | None = None  # octets after a DATA line, until smtp_DATA answered
        self._sink: DataSink | None = None
        self._last_input = 0.0
        self._connected_at = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self.defences: ConnectionDefences | None = None  # port 25 only
        self._auth_summary = ""  # the last message's SPF/DKIM/DMARC results, for its log line
        self._handler: asyncio.Task | None = None  # aiosmtpd's command loop, once a command has come
        self._lost = False
        # aiosmtpd keeps these limits on the class; this listener's own, made once.
        self.command_size_limits = _command_limits(self.line_length_limit)

    # -- plumbing ------------------------------------------------------------
    def __dir__(self) -> list[str]:
        """The commands and AUTH mechanisms only (``smtp_<VERB>``,
        ``auth_<MECH>``): how aiosmtpd finds a subclass's (its documented
        extension points), and all it looks for when it builds its tables at
        every connection.  Listing every attribute made it fetch each one of
        about two hundred, a third of the cost of accepting a connection."""
        cls = type(self)
        names = _EXTENSION_NAMES.get(cls)
        if names is None:  # once per class (dir of the class is not this method)
            names = _EXTENSION_NAMES[cls] = [n for n in dir(cls) if n.startswith(("smtp_", "auth_"))]
        return names

    def _create_session(self) -> Session:
        return RelaySession(self.loop)

    @property
    def tls_active(self) -> bool:
        return getattr(self, "_implicit_tls", False) or (self.session is not None and self.session.ssl is not None)

    def _ssl_object(self):
        if self.session is not None and self.session.ssl:
            return self.session.ssl.get("ssl_object")
        return self.transport.get_extra_info("ssl_object") if self.transport else None

    def _offers(self) -> None:
        tls = self.tls_active
        self.starttls_offered = self.tls_context is not None and not tls
        self.auth_offered = self.listener.requires_auth and plaintext_login_allowed(
            self.ctx.config.auth, self.peer_ip, tls)

    def _reset_envelope(self) -> None:
        self.envelope = self._create_envelope()

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

    async def _refuse(self, reply: Reply, *, sender: str | None = None, recipient: str = "") -> None:
        self.ctx.count_rejection(reply.reason)
        self._note_refusal(reply, sender=sender, recipient=recipient)
        await self.push(str(reply))

    def _note_refusal(self, reply: Reply, *, sender: str | None = None, recipient: str = "") -> None:
        if self.ctx.backscatter is not None:
            self.ctx.backscatter.refusals.record(
                reply, sender=self.envelope.mail_from or "" if sender is None else sender, recipient=recipient,
                client=self.peer_ip)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- connection (asyncio's protocol callbacks) -------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[override]
        if self._admitted:  # again, after STARTTLS: a new stream, nothing held from before
            self._tail, self._held = b"", None
            super().connection_made(transport)
            self._offers()
            return
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
        self._admitted = True
        self._connected_at = time.monotonic()
        self.ctx.sessions.add(self)
        self.ctx.metrics.inc(ctxmod.CONNECTIONS, listener=self.listener.value)
        self.ctx.metrics.set(ctxmod.CONNECTIONS_OPEN, self.ctx.gate.total)
        if self.ctx.defences is not None and self.listener is Listener.SMTP:
            self.defences = self.ctx.defences.connection(self.peer_ip)
            self.defences.connected()  # DNSBL lookups start now; their verdict is awaited at RCPT
        super().connection_made(transport)
        self._offers()
        self._last_input = self._connected_at = self.loop.time()
        first = self._last_input + self.ctx.config.relay.timeout_seconds
        self._idle_timer = self.loop.call_at(min(first, self._login_deadline() or first), self._idle_check)

    def _handler_done(self, task: asyncio.Task) -> None:
        if task is self._handler and self._lost:
            self.loop.call_soon(self._forget)

    def _forget(self) -> None:
        """The connection is over and aiosmtpd's command loop has ended: let
        go of everything.  aiosmtpd's tables of bound methods make every
        connection's objects a reference cycle; without this each one waited
        for the garbage collector (a few percent of the relay's CPU)."""
        self.__dict__.clear()

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        self._lost = True
        if self._handler is not None and self._handler.done():
            self.loop.call_soon(self._forget)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._sink is not None and not self._sink.done.done():
            self._sink.done.set_result(False)
        if self._admitted:
            self._admitted = False
            self.ctx.gate.release(self.peer_ip)
            self.ctx.sessions.discard(self)
            self.ctx.metrics.set(ctxmod.CONNECTIONS_OPEN, self.ctx.gate.total)
            self.ctx.metrics.observe(ctxmod.SESSION_SECONDS, time.monotonic() - self._connected_at,
                                     listener=self.listener.value)
            if self.defences is not None:
                self.defences.close()
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        if self._refused:
            return False
        if self._sink is not None and not self._sink.done.done():
            # The client closed its side in the middle of a message: it can
            # never send the final dot, so the transfer is over now (not at
            # the idle timeout, holding the connection slot and the message).
            self.log.info("data_aborted", received=self._sink.reader.received)
            self._sink.done.set_result(False)
            return False  # asyncio closes the transport: connection_lost follows
        return super().eof_received()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._last_input = self.loop.time()
        self._input(data)

    def _input(self, data: bytes) -> None:
        """Where the client's octets go: the message being read, held back
        after a DATA line, or aiosmtpd's command reader."""
        if self._sink is not None:
            rest = self._sink.feed(data)
            if rest is None:
                return
            self._sink = None
            data = rest
            if not data:
                return
        if self._held is not None:
            self._held += data
            if len(self._held) > HOLD_LIMIT and self.transport is not None:
                self.transport.pause_reading()
            return
        if self._skip_line:  # the rest of an over-long AUTH answer
            nl = data.find(b"\n")
            if nl < 0:
                return
            self._skip_line = False
            data = data[nl + 1:]
            if not data:
                return
        if self._in_auth:
            self._auth_eol = self._auth_eol or b"\n" in data
            super().data_received(data)
            return
        end, self._tail = data_line_end(data, self._tail)
        if end < 0:
            super().data_received(data)
            return
        super().data_received(data[:end])
        self._held = bytearray(data[end:])

    def _release(self, held: bytearray | None) -> None:
        """DATA was refused: what followed it is commands after all."""
        if self.transport is not None and held is not None and len(held) > HOLD_LIMIT:
            self.transport.resume_reading()
        if held:
            self._input(bytes(held))

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
        if not self.listener.requires_auth or (self.session is not None and self.session.mailbox is not None):
            return None
        return self._connected_at + self.ctx.config.auth.login_timeout_seconds

    # -- greeting and capabilities -------------------------------------------
    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str | None) -> None:
        if not hostname:
            await self.push("501 5.5.4 Syntax: EHLO hostname")
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
        await self._raw("\r\n".join(f"250{'-' if i < len(lines) - 1 else ' '}{line}"
                                    for i, line in enumerate(lines)))

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str | None) -> None:
        if not hostname:
            await self.push("501 5.5.4 Syntax: HELO hostname")
            return
        self._reset_envelope()
        self.session.extended_smtp = False
        self.session.host_name = hostname
        await self._raw(f"250 {self.hostname}")

    @syntax("STARTTLS", when="starttls_offered")
    async def smtp_STARTTLS(self, arg: str | None) -> None:
        if self.tls_active:
            await self.push("503 5.5.1 TLS is already active")
            return
        if self.tls_context is None:
            await self.push("454 4.7.0 TLS not available")
            return
        await super().smtp_STARTTLS(arg)

    # -- AUTH (RFC 4954; PLAIN RFC 4616, LOGIN) --------------------------------
    async def _challenge(self, text: str) -> bytes | None:
        """Send a 334 challenge, return the client's answer, base64-decoded
        (None if it aborted or sent nonsense; the reply has then been sent)."""
        self._greeted = True
        self._in_auth = True  # an answer is no command, whatever it looks like
        self._auth_eol = False
        try:
            answer = await self.challenge_auth(text, encode_to_b64=True)
        except ValueError:  # longer than the read buffer
            # The reader dropped what it held; unless the line's end had
            # come, the rest of it is still on its way: dropped as it comes
            # (:meth:`_input`), so that it gets no reply of its own.
            self._skip_line = not self._auth_eol
            await self.push("501 5.5.2 Authentication line too long")
            return None
        finally:
            self._in_auth = False
        return None if answer is MISSING else answer

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
                await self.push(f"501 5.5.2 Invalid PLAIN response: {exc}")
                return None
            return user, password
        # LOGIN: username, then password, each base64
        if initial is not None:
            try:
                user_raw: bytes | None = base64.b64decode(initial, validate=True)
            except (binascii.Error, ValueError):
                await self.push("501 5.5.2 Cannot decode base64")
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
            await self.push("501 5.5.2 Credentials are not UTF-8")
            return None

    @syntax("AUTH <mechanism> [initial-response]", when="auth_offered")
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
        self.log.info("auth_failed", mechanism=mechanism, user=user[:200], failure=result.failure,
                      reason=result.detail or result.failure)
        if result.failure == "suspended":
            await self.push("535 5.7.8 Authentication refused: the mailbox is suspended")
        else:
            hint = wait_hint(result.retry_after)
            await self.push("535 5.7.8 Authentication credentials invalid" + (f".{hint}" if hint else ""))
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
        if self.defences is not None:  # SPF
            refusal = await self.defences.at_mail(self.session.host_name or "", sender.address if sender else "")
            self.ctx.count_verdicts(self.defences.mail_verdicts())
            if refusal:
                self.log.info("sender_refused", sender=sender.address if sender else "", reason=refusal.reason,
                              reply=str(refusal))
                await self._refuse(refusal, sender=sender.address if sender else "")
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
        if self.defences is not None:  # the DNSBL verdict, SRS bounce addresses
            outcome = await self.defences.at_rcpt(rcpt.address)
            if outcome.reply is not None:
                self.log.info("recipient_refused", recipient=rcpt.address, reason=outcome.reply.reason,
                              reply=str(outcome.reply))
                await self._refuse(outcome.reply, recipient=rcpt.address)
                return
            if outcome.srs:  # a bounce to a sender we forwarded for: it goes back to them
                self.log.info("srs_bounce", recipient=rcpt.address, to=outcome.recipient)
                if outcome.recipient.lower() not in (r.lower() for r in self.envelope.rcpt_tos):
                    self.envelope.rcpt_tos.append(outcome.recipient)
                await self.push(f"250 2.1.5 Recipient <{rcpt.address}> OK")
                return
        refusal = check_recipient(self.listener, self.session.mailbox is not None, rcpt, config,
                                  self.ctx.directory.get())
        if refusal:
            self.log.info("recipient_refused", recipient=rcpt.address, reason=refusal.reason)
            await self._refuse(refusal, recipient=rcpt.address)
            return
        if self.ctx.backscatter is not None:  # forwards to broken mailboxes, quota
            found = self.ctx.backscatter.checks.at_rcpt(self.ctx.directory.get(), rcpt.address,
                                                        self.session.mail_options.size if self.session.mail_options
                                                        else None)
            if found is not None:
                self.log.info("recipient_refused", recipient=rcpt.address, reason=found[0].reason, target=found[1])
                await self._refuse(found[0], recipient=rcpt.address)
                return
        address = rcpt.address
        if address.lower() not in (r.lower() for r in self.envelope.rcpt_tos):
            self.envelope.rcpt_tos.append(address)
        await self.push(f"250 2.1.5 Recipient <{address}> OK")

    @syntax("DATA")
    async def smtp_DATA(self, arg: str | None) -> None:
        held, self._held = self._held, None
        refusal = await self._transaction_refusal()
        if refusal:
            await self._refuse(refusal)
        elif arg:
            await self.push("501 5.5.4 Syntax: DATA")
        elif self.envelope.mail_from is None:
            await self.push("503 5.5.1 Need MAIL command first")
        elif not self.envelope.rcpt_tos:
            if self.session.rcpt_attempts:
                await self.push("554 5.5.1 No valid recipients")
            else:
                await self.push("503 5.5.1 Need RCPT command first")
        else:
            await self._message(held)
            return
        self._release(held)

    async def _message(self, held: bytearray | None) -> None:
        """``354``, the message (read by :meth:`_input` into a sink), its
        checks, the hand-off, the reply."""
        relay = self.ctx.config.relay
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        reader = MessageReader(relay.max_message_bytes, relay.max_line_length,
                               spool_over=relay.data_in_memory_bytes, spool_dir=relay.data_spool_dir or None)
        sink = DataSink(reader, self.loop.create_future())
        inflight = 0
        self.busy = True
        try:
            self._sink = sink
            if held is not None and len(held) > HOLD_LIMIT and self.transport is not None:
                self.transport.resume_reading()
            if held:
                self._input(bytes(held))
            if not await sink.done:  # the connection went away first
                return
            self.ctx.metrics.inc(ctxmod.BYTES, reader.received, listener=self.listener.value)
            refusal = reader.refusal()
            if refusal is not None:
                self.log.info("message_refused", reason=refusal.reason, size=reader.size)
                self._reset_envelope()
                await self._refuse(refusal)
                return
            if self.ctx.inflight_bytes and self.ctx.inflight_bytes + reader.size > relay.max_inflight_bytes:
                self.log.warning("message_deferred_memory", size=reader.size, inflight=self.ctx.inflight_bytes)
                self._reset_envelope()
                await self._refuse(Reply(452, "4.3.1", "Insufficient system resources for this message now; "
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
            await self.push(str(reply))
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
