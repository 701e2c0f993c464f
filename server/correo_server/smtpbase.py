"""What correo's three aiosmtpd servers share: aiosmtpd's ``SMTP`` made cheaper
per connection and per command, with the same behaviour.

The relay (:mod:`correo_server.relay.smtp`), the queue's LMTP listener
(:mod:`correo_server.queue.lmtp_in`) and the mailstore's
(:mod:`correo_server.mailstore.lmtp`) mix :class:`Speedups` into their aiosmtpd
classes.  Profiling the SMTP ingest benchmark (``bench/smtp_ingest.py``) showed
costs of aiosmtpd 1.4 that have nothing to do with mail:

* **construction**: ``SMTP.__init__`` finds the ``smtp_*``, ``auth_*`` and
  ``handle_*`` methods with ``inspect.getmembers`` and ``dir`` on every new
  connection (which also evaluates every property of the instance), about
  0.5 ms per connection.  :class:`Speedups` looks the names up once per class
  and handler and binds them per connection.  The first instance of each class
  is built by aiosmtpd's own ``__init__`` as well, and if the two disagree on
  the attributes they set (a newer aiosmtpd), that class keeps aiosmtpd's
  ``__init__`` from then on;
* **the idle timer**: aiosmtpd cancels and creates a timer for every
  command; here the timer is re-armed only when it fires early;
* **the message**: aiosmtpd reads ``DATA`` one line at a time (a
  ``readuntil`` and a dozen Python steps for each of a message's lines);
  :meth:`Speedups.smtp_DATA` reads up to each ``.<CRLF>`` (a few large pieces
  for a whole message) and unstuffs the dots in one pass.  The rules are
  aiosmtpd's: the same end of data (``<CRLF>.<CRLF>`` only), the same size
  and line-length limits and which of them is reported first (once the size
  limit is crossed, aiosmtpd's per-line order decides), the same replies and
  hooks;
* **addresses**: ``SMTP._getaddr`` parses every ``MAIL FROM``/``RCPT TO``
  path with the ``email`` package's RFC 5322 header parser and defines a
  ``typing.Protocol`` class on each call, about 0.1 ms a command.  The common
  shape, ``<dot-atom@domain>`` in ASCII, is recognised by one regular
  expression with the same result; everything else still goes to aiosmtpd.
"""
from __future__ import annotations

import asyncio
import inspect
import re
import warnings
from typing import Any, AsyncIterator

from aiosmtpd.smtp import MISSING, SMTP, _AuthMechAttr, _DataState, login_always_fail

from . import logs

log = logs.get(__name__)

# RFC 5321 Dot-string "@" Domain (no address literal), ASCII only, in angle
# brackets at the very start of the argument, then blanks (which aiosmtpd's
# parser skips, as RFC 5322 CFWS) and the parameters.  A comment after the
# brackets, "(", is left to aiosmtpd.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_SIMPLE_PATH = re.compile(rf"<({_ATEXT}+(?:\.{_ATEXT}+)*@{_LABEL}(?:\.{_LABEL})*)>[ \t]*+(?![(])")


def simple_path(arg: str) -> tuple[str, str] | None:
    """``"<a@b.example> SIZE=1"`` → ``("a@b.example", "SIZE=1")``, as
    aiosmtpd's ``_getaddr`` says; None when the argument is anything but that
    common shape."""
    m = _SIMPLE_PATH.match(arg)
    if m is None:
        return None
    return m.group(1), arg[m.end():]


# Per class: True (checked: the fast path), False (aiosmtpd's __init__); absent: not checked yet.
_verified: dict[type, bool] = {}
_names: dict[type, tuple[list[str], list[tuple[str, str]]]] = {}
_handler_tables: dict[tuple[type, int], tuple[Any, dict, dict, str | None]] = {}
_SUPPORTED = {"data_size_limit", "enable_SMTPUTF8", "decode_data", "hostname", "ident", "tls_context",
              "timeout", "auth_require_tls", "loop"}


async def data_pieces(reader: asyncio.StreamReader, tail: bytes = b"\r\n") -> AsyncIterator[tuple[bytes, bool]]:
    """The DATA section in large pieces, up to its end: yields ``(piece,
    end)``; the last piece (``end`` true) comes without the ``.<CRLF>``
    marker.  Only a ``.`` line after a CRLF ends the data (``tail``: the last
    two octets before the first piece; data starts at a line start).  Raises
    ``asyncio.IncompleteReadError`` when the connection closes first."""
    while True:
        try:
            chunk = await reader.readuntil(b".\r\n")
            end = (tail + chunk[-5:])[-5:] == b"\r\n.\r\n"
        except asyncio.LimitOverrunError as exc:
            chunk = await reader.readexactly(exc.consumed)  # no ".<CRLF>" starts in there
            end = False
        tail = (tail + chunk[-2:])[-2:]
        yield (chunk[:-3] if end else chunk), end
        if end:
            return


class Speedups:
    """Mix in before aiosmtpd's ``SMTP`` (or ``LMTP``): ``class X(Speedups, LMTP)``."""

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        cls = type(self)
        state = _verified.get(cls)
        if state is False or not set(kwargs) <= _SUPPORTED or not kwargs.get("hostname") or not kwargs.get("loop"):
            SMTP.__init__(self, handler, **kwargs)  # type: ignore[arg-type]
            return
        if state is None:
            # First instance of this class: aiosmtpd's own __init__, then check
            # that the fast one would have set the same attributes.
            preset = set(vars(self))  # what the subclass set before calling us
            SMTP.__init__(self, handler, **kwargs)  # type: ignore[arg-type]
            expected = vars(self)
            probe = object.__new__(cls)
            try:
                _fast_init(probe, handler, **kwargs)
                same = (set(vars(probe)) - preset == set(expected) - preset
                        and set(probe._smtp_methods) == set(expected["_smtp_methods"])
                        and set(probe._auth_methods) == set(expected["_auth_methods"])
                        and set(probe._handle_hooks) == set(expected["_handle_hooks"]))
                reason = "" if same else "aiosmtpd sets other attributes"
            except Exception as exc:  # noqa: BLE001 - anything odd: keep aiosmtpd's way
                same, reason = False, repr(exc)
            _verified[cls] = same
            if not same:
                log.warning("smtp_fast_init_unavailable", cls=cls.__name__, reason=reason)
            return
        _fast_init(self, handler, **kwargs)

    def _reset_timeout(self, duration: float | None = None) -> None:
        """aiosmtpd's idle timeout, without a new timer for every command: the
        timer fires at the earliest deadline and, if the session was active
        since, waits again until the deadline moved to."""
        loop = self.loop  # type: ignore[attr-defined]
        deadline = loop.time() + (duration or self._timeout_duration)  # type: ignore[attr-defined]
        self._idle_deadline = deadline
        handle = self._timeout_handle  # type: ignore[has-type]
        if handle is not None and not handle.cancelled() and handle.when() <= deadline:
            return
        if handle is not None:
            handle.cancel()
        self._timeout_handle = loop.call_at(deadline, self._idle_check)

    def _idle_check(self) -> None:
        self._timeout_handle = None
        loop = self.loop  # type: ignore[attr-defined]
        if self._idle_deadline - loop.time() > 0.001:
            self._timeout_handle = loop.call_at(self._idle_deadline, self._idle_check)
        else:
            self._timeout_cb()  # type: ignore[attr-defined]

    # -- DATA (after aiosmtpd 1.4.6's SMTP.smtp_DATA, Apache-2.0) -----------------
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():  # type: ignore[attr-defined]
            return
        if await self.check_auth_needed("DATA"):  # type: ignore[attr-defined]
            return
        assert self.envelope is not None  # type: ignore[attr-defined]
        if not self.envelope.rcpt_tos:  # type: ignore[attr-defined]
            await self.push("503 Error: need RCPT command")  # type: ignore[attr-defined]
            return
        if arg:
            await self.push("501 Syntax: DATA")  # type: ignore[attr-defined]
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")  # type: ignore[attr-defined]
        try:
            state, original_content = await self._read_data()
        except asyncio.CancelledError:
            self._writer.close()  # type: ignore[attr-defined]  # the connection went away during DATA
            raise
        if state is None:  # the connection went away: no reply, no message
            return
        if state is not _DataState.NOMINAL:
            if state is _DataState.TOO_LONG:
                await self.push("500 Line too long (see RFC5321 4.5.3.1.6)")  # type: ignore[attr-defined]
            else:
                await self.push("552 Error: Too much mail data")  # type: ignore[attr-defined]
            self._set_post_data_state()  # type: ignore[attr-defined]
            return
        content: str | bytes = original_content
        if self._decode_data:  # type: ignore[attr-defined]
            if self.enable_SMTPUTF8:  # type: ignore[attr-defined]
                content = original_content.decode("utf-8", errors="surrogateescape")
            else:
                try:
                    content = original_content.decode("ascii", errors="strict")
                except UnicodeDecodeError:
                    await self.push("500 Error: strict ASCII mode")  # type: ignore[attr-defined]
                    return
        self.envelope.content = content  # type: ignore[attr-defined]
        self.envelope.original_content = original_content  # type: ignore[attr-defined]
        if "DATA" in self._handle_hooks:  # type: ignore[attr-defined]
            status = await self._call_handler_hook("DATA")  # type: ignore[attr-defined]
        else:
            status = MISSING  # correo's handlers all have handle_DATA
        self._set_post_data_state()  # type: ignore[attr-defined]
        await self.push("250 OK" if status is MISSING else status)  # type: ignore[attr-defined]

    async def _read_data(self) -> tuple[_DataState | None, bytes]:
        """Read up to the end of data: (state, the message with its dots
        unstuffed); (None, b"") when the connection went away first."""
        reader: asyncio.StreamReader = self._reader  # type: ignore[attr-defined]
        limit = self.data_size_limit  # type: ignore[attr-defined]
        parts: list[bytes] = []
        size = 0  # octets of the lines read so far, as aiosmtpd counts them
        try:
            async for body, end in data_pieces(reader):
                if self.transport is None:  # type: ignore[attr-defined]
                    return None, b""
                parts.append(body)
                size += len(body)
                if limit and size > limit:
                    # Over the limit: which problem aiosmtpd would name is decided line by line.
                    state = await self._read_data_over_limit(b"".join(parts), end)
                    return state, b""
        except asyncio.IncompleteReadError:
            return None, b""
        data = b"".join(parts)
        if len(max(data.split(b"\r\n"), key=len)) + 2 > self.line_length_limit:  # type: ignore[attr-defined]
            return _DataState.TOO_LONG, b""
        if data.startswith(b"."):
            data = data[1:]
        return _DataState.NOMINAL, data.replace(b"\r\n.", b"\r\n")

    async def _read_data_over_limit(self, seen: bytes, ended: bool) -> _DataState | None:
        """The state aiosmtpd's line loop reaches for a message whose size is
        over the limit, ``seen`` being what was read of it so far; then the
        rest is read (and dropped) up to the end of data.

        aiosmtpd, for each line: a line longer than the reader's limit (the
        line limit) is "too long" as soon as it overruns, before its octets
        are counted; then the size is checked; then the whole line's length."""
        limit = self.data_size_limit  # type: ignore[attr-defined]
        line_limit = self.line_length_limit  # type: ignore[attr-defined]
        reader: asyncio.StreamReader = self._reader  # type: ignore[attr-defined]
        state = _DataState.NOMINAL
        num_bytes = 0

        def line(length: int) -> None:  # one line of ``length`` octets and its CRLF
            nonlocal state, num_bytes
            if state is _DataState.NOMINAL and length > line_limit:
                state = _DataState.TOO_LONG
            num_bytes += length + 2
            if state is _DataState.NOMINAL and num_bytes > limit:
                state = _DataState.TOO_MUCH
            if state is _DataState.NOMINAL and length + 2 > line_limit:
                state = _DataState.TOO_LONG

        *complete, partial = seen.split(b"\r\n")
        for text in complete:
            line(len(text))
        if ended:
            return state
        tail = (b"\r\n" + seen)[-2:]
        if state is _DataState.NOMINAL:
            # The limit is crossed in the line in progress: its length decides.
            length = len(partial)
            last_cr = partial.endswith(b"\r")
            try:
                while True:
                    if last_cr:  # a CR at the end of what was read: is the LF next?
                        octet = await reader.readexactly(1)
                        if octet == b"\n":
                            length -= 1
                            break
                        length += 1
                        last_cr = octet == b"\r"
                        continue
                    try:
                        length += len(await reader.readuntil(b"\r\n")) - 2
                        break
                    except asyncio.LimitOverrunError as exc:
                        piece = await reader.readexactly(exc.consumed)
                        length += len(piece)
                        last_cr = piece.endswith(b"\r")
            except asyncio.IncompleteReadError:
                return None
            line(length)
            tail = b"\r\n"
        try:
            async for _dropped, _end in data_pieces(reader, tail):  # up to the end of data
                if self.transport is None:  # type: ignore[attr-defined]
                    return None
        except asyncio.IncompleteReadError:
            return None
        return state

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        found = simple_path(arg) if arg else None
        limit = self.local_part_limit  # type: ignore[attr-defined]
        if found is not None and not (limit and len(found[0].rpartition("@")[0]) > limit):
            return found
        return SMTP._getaddr(self, arg)  # type: ignore[arg-type]


def _class_names(cls: type) -> tuple[list[str], list[tuple[str, str]]]:
    """(``smtp_*`` method names, [(AUTH mechanism, ``auth_*`` name)]) of a class."""
    names = _names.get(cls)
    if names is None:
        everything = dir(cls)
        smtp = [m for m in everything if m.startswith("smtp_")]
        auth = []
        for m in everything:
            if m.startswith("auth_"):
                func = getattr(cls, m)
                auth.append((getattr(func, "__auth_mechanism_name__", m.replace("auth_", "").replace("__", "-")), m))
        names = _names[cls] = (smtp, auth)
    return names


def _handler_part(handler: Any) -> tuple[dict, dict, str | None]:
    """The handler's AUTH methods, ``handle_*`` hooks and EHLO hook version;
    the same for every connection of a listener (bound to the handler)."""
    key = (type(handler), id(handler))
    cached = _handler_tables.get(key)
    if cached is not None and cached[0] is handler:
        return cached[1], cached[2], cached[3]
    auth = {getattr(mfunc, "__auth_mechanism_name__", mname.replace("auth_", "").replace("__", "-")):
            _AuthMechAttr(mfunc, False)
            for mname, mfunc in inspect.getmembers(handler) if mname.startswith("auth_")}
    hooks = {m.replace("handle_", ""): getattr(handler, m) for m in dir(handler) if m.startswith("handle_")}
    ehlo = hooks.get("EHLO")
    version = None
    if ehlo is not None:
        n = len(inspect.signature(ehlo).parameters)
        if n == 4:
            version = "old"
            warnings.warn("Use the 5-argument handle_EHLO() hook instead of the 4-argument handle_EHLO() hook; "
                          "support for the 4-argument handle_EHLO() hook will be removed in version 2.0",
                          DeprecationWarning)
        elif n == 5:
            version = "new"
        else:
            raise RuntimeError("Unsupported EHLO Hook")
    if len(_handler_tables) > 256:  # listeners come and go in tests
        _handler_tables.clear()
    _handler_tables[key] = (handler, auth, hooks, version)
    return auth, hooks, version


def _fast_init(self: Any, handler: Any, *, data_size_limit: int | None = 33554432, enable_SMTPUTF8: bool = False,
               decode_data: bool = False, hostname: str, ident: str | None = None, tls_context: Any = None,
               timeout: float = 300, auth_require_tls: bool = True, loop: asyncio.AbstractEventLoop) -> None:
    """aiosmtpd 1.4's ``SMTP.__init__`` for the arguments correo passes, with
    the method tables from per-class caches."""
    from aiosmtpd.smtp import __ident__
    self.__ident__ = ident or __ident__
    self.loop = loop
    asyncio.StreamReaderProtocol.__init__(
        self, asyncio.StreamReader(loop=loop, limit=self.line_length_limit),
        client_connected_cb=self._cb_client_connected, loop=loop)
    self.event_handler = handler
    self.data_size_limit = data_size_limit
    self.enable_SMTPUTF8 = enable_SMTPUTF8
    self._decode_data = decode_data
    self.command_size_limits.clear()
    self.hostname = hostname
    self.tls_context = tls_context
    self.require_starttls = tls_context and False
    self._timeout_duration = timeout
    self._timeout_handle = None
    self._tls_handshake_okay = True
    self._tls_protocol = None
    self._original_transport = None
    self.session = None
    self.envelope = None
    self.transport = None
    self._handler_coroutine = None
    self._auth_require_tls = auth_require_tls
    self._proxy_timeout = None
    self._auth_callback = login_always_fail
    self._authenticator = None
    self._auth_required = False
    smtp_names, auth_names = _class_names(type(self))
    handler_auth, hooks, ehlo_version = _handler_part(handler)
    auth = {mech: _AuthMechAttr(getattr(self, mname), True) for mech, mname in auth_names}
    auth.update(handler_auth)  # as in aiosmtpd: the handler's own wins
    self._auth_methods = auth
    self._handle_hooks = hooks
    self._ehlo_hook_ver = ehlo_version
    self._smtp_methods = {m[5:]: getattr(self, m) for m in smtp_names}
    self._enforce_call_limit = False
