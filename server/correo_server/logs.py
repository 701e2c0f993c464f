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
"""
from __future__ import annotations

import asyncio
import atexit
import logging
import sys

import structlog

_configured = False


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


def setup(fmt: str = "json", level: str = "info", service: str | None = None, stream=None,
          cache: bool = False) -> None:
    """Configure structlog and the standard library's logging (aiosmtpd,
    kopf, asyncio).  ``cache``: for a process that configures logging once
    (``correo serve``): loggers are kept after their first use and lines are
    written once per event-loop turn."""
    global _configured
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
    structlog.configure(
        processors=[*processors, structlog.processors.format_exc_info, renderer],
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
    _configured = True


def _add_service(service: str):
    def processor(_logger, _name, event_dict):
        event_dict.setdefault("service", service)
        return event_dict
    return processor


def get(name: str | None = None, **context):
    return structlog.get_logger(name).bind(**context) if context else structlog.get_logger(name)
