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
from typing import Any

from aiosmtpd.smtp import SMTP, _AuthMechAttr, login_always_fail

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
            except Exception as exc:  # noqa: BLE001 - anything odd: keep aiosmtpd's way
                log.warning("smtp_fast_init_unavailable", cls=cls.__name__, error=repr(exc))
                same = False
            _verified[cls] = same
            if not same:
                log.warning("smtp_fast_init_unavailable", cls=cls.__name__, reason="aiosmtpd sets other attributes")
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
        if self._idle_deadline - self.loop.time() > 0.001:  # type: ignore[attr-defined]
            self._timeout_handle = self.loop.call_at(self._idle_deadline, self._idle_check)  # type: ignore[attr-defined]
        else:
            self._timeout_cb()  # type: ignore[attr-defined]

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        found = simple_path(arg) if arg else None
        if found is not None and not (self.local_part_limit  # type: ignore[attr-defined]
                                      and len(found[0].rpartition("@")[0]) > self.local_part_limit):  # type: ignore[attr-defined]
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
