"""Structured logs (structlog) for every correo process.

``setup("json")`` on Kubernetes and for ``correo serve`` (one JSON object per
line, the default), ``setup("console")`` for a person at a terminal.
Modules get their logger with ``get(__name__)`` and pass context as keys
(``queue_id=``, ``peer=``) rather than formatting it into the message.
Passwords and message bodies are never logged.

What a message costs in logs: each service writes **one** ``info`` line per
message (per recipient where recipients part ways): the relay
``message_accepted``, the queue ``delivered`` (or ``deferred``/``bounced``),
the mailstore ``lmtp_delivered``, each with the queue id; the steps in
between are ``debug``.  A service (``setup(..., cache=True)``) keeps its
loggers once configured, and writes its lines every 50 ms in one piece
rather than one write each (what a ``kill -9`` can lose is the last 50 ms
of lines), which also spares ``correo up`` a wake-up per line it forwards.

In JSON the processor chain is one function (:class:`_JsonLine`: service,
structlog's context variables, level, timestamp, exception, rendering)
with the encoder built once, the timestamp's date and time of day
formatted once a second; the line is what structlog's own processors
(``merge_contextvars``, ``add_log_level``, ``TimeStamper(fmt="iso",
utc=True)``, ``format_exc_info``, ``JSONRenderer``) wrote, key for key.
With ``cache`` the module loggers of :func:`get` keep their resolved
methods (``log.info`` is then an attribute, not a lazy proxy's lookup and
bind per call).
"""
from __future__ import annotations

import asyncio
import atexit
import json
import logging
import sys
import time
import weakref

import structlog
import structlog.contextvars
from structlog.processors import format_exc_info

_configured = False
_cache = False  # resolved logger methods are kept (setup(cache=True))
_loggers: "weakref.WeakSet[_Lazy]" = weakref.WeakSet()  # what get() handed out, to forget at setup()


class _Stderr:
    """``sys.stderr`` as it is when a line is written, not when logging was set
    up (test runners and daemons swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


class _StderrHandler(logging.StreamHandler):
    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


class TurnBuffer:
    """A stream that holds what is written while an event loop runs and
    writes it in one piece a moment later (``delay`` seconds; at once past
    ``limit`` characters, and outside an event loop)."""

    def __init__(self, stream, delay: float = 0.05, limit: int = 64 * 1024) -> None:
        self.stream = stream
        self.delay = delay
        self.limit = limit
        self._parts: list[str] = []
        self._size = 0
        self._scheduled = None  # the loop that will flush, if one will
        atexit.register(self.flush)

    def write(self, text: str) -> int:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop in this thread: at once
            self._write(text)
            return len(text)
        self._parts.append(text)
        self._size += len(text)
        if self._size > self.limit:
            self.flush()
        elif self._scheduled is not loop:  # none scheduled, or on a loop that has ended since
            self._scheduled = loop
            loop.call_later(self.delay, self.flush)
        return len(text)

    def flush(self) -> None:
        self._scheduled = None
        parts, self._parts, self._size = self._parts, [], 0
        if parts:
            self._write("".join(parts))

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed: nothing to tell anyone
            pass

    def isatty(self) -> bool:
        return self.stream.isatty()


class _Logger:
    """structlog's ``PrintLogger`` without ``print``: one ``write`` of the
    rendered line (the stream buffers; :class:`TurnBuffer` flushes)."""

    def __init__(self, file) -> None:
        self._file = file

    def msg(self, message: str) -> None:
        self._file.write(message + "\n")

    log = debug = info = warn = warning = err = error = critical = exception = fatal = failure = msg


class _LoggerFactory:
    def __init__(self, file) -> None:
        self._file = file

    def __call__(self, *args) -> _Logger:
        return _Logger(self._file)


def _json_default(obj):
    """What JSONRenderer does with what json cannot encode."""
    try:
        return obj.__structlog__()
    except AttributeError:
        return repr(obj)


_encode_json = json.JSONEncoder(default=_json_default).encode  # json.dumps(..., default=...) builds one per call
_LEVEL_NAMES = {"warn": "warning", "exception": "error"}  # structlog's map_method_name
# structlog's context variables, when any were ever bound (none in the services);
# unknown (another structlog): merged on every line, as merge_contextvars does.
_CONTEXT_VARS = getattr(structlog.contextvars, "_CONTEXT_VARS", None)


class _UtcNow:
    """``2026-12-05T03:32:25.325148Z`` (TimeStamper's ISO UTC form), the part
    up to the second formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{int((now - second) * 1_000_000):06d}Z"


class _JsonLine:
    """The JSON processor chain in one call (see the module docstring)."""

    def __init__(self, service: str | None) -> None:
        self.service = service
        self.now = _UtcNow()

    def __call__(self, logger, method_name: str, event_dict: dict) -> str:
        if self.service is not None:
            event_dict.setdefault("service", self.service)
        if _CONTEXT_VARS is None or _CONTEXT_VARS:
            event_dict = structlog.contextvars.merge_contextvars(logger, method_name, event_dict)
        event_dict["level"] = _LEVEL_NAMES.get(method_name, method_name)
        event_dict["timestamp"] = self.now()
        if "exc_info" in event_dict:
            event_dict = format_exc_info(logger, method_name, event_dict)
        return _encode_json(event_dict)


def setup(fmt: str = "json", level: str = "info", service: str | None = None, stream=None,
          cache: bool = False) -> None:
    """Configure structlog and the standard library's logging (aiosmtpd,
    kopf, asyncio).  ``cache``: for a process that configures logging once
    (``correo serve``): loggers are kept after their first use and lines are
    written once per event-loop turn."""
    global _configured, _cache
    level_no = getattr(logging, level.upper(), logging.INFO)
    stream = stream or _Stderr()
    renderer = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if service:
        processors.insert(0, _add_service(service))
    out = TurnBuffer(stream) if cache else stream
    chain = [_JsonLine(service)] if fmt == "json" else [*processors, format_exc_info, renderer]
    structlog.configure(
        processors=chain,
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        logger_factory=_LoggerFactory(out) if cache else structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=cache,
    )
    # Libraries that use stdlib logging (aiosmtpd, kopf, asyncio) go the same way.
    if cache:
        handler: logging.Handler = logging.StreamHandler(out)
    else:
        handler = logging.StreamHandler(stream) if not isinstance(stream, _Stderr) else _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=processors, processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer])
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(level_no, logging.INFO))
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-command chatter
    _cache = cache
    for lazy in list(_loggers):  # resolved under the previous configuration
        lazy._forget()
    _configured = True


def _add_service(service: str):
    def processor(_logger, _name, event_dict):
        event_dict.setdefault("service", service)
        return event_dict
    return processor


class _Lazy:
    """A module's logger (what :func:`get` returns before logging is set
    up): each use asks structlog as configured then; once a caching
    configuration is in place, the methods it resolved stay on the object
    (until :func:`setup` runs again)."""

    def __init__(self, name: str | None) -> None:
        self._name = name
        self._proxy = structlog.get_logger(name)
        _loggers.add(self)

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        value = getattr(self._proxy, attr)
        if _cache:
            self.__dict__[attr] = value
        return value

    def _forget(self) -> None:
        name = self._name
        self.__dict__.clear()
        self._name = name
        self._proxy = structlog.get_logger(name)  # structlog's own proxy may have cached its logger

    def __repr__(self) -> str:
        return f"<correo logger {self._proxy!r}>"


def get(name: str | None = None, **context):
    return structlog.get_logger(name).bind(**context) if context else _Lazy(name)
