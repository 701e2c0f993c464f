"""Structured logs (structlog) for every correo process.

``setup("json")`` on Kubernetes (one JSON object per line), ``setup("console")``
for a person at a terminal.  Modules get their logger with ``get(__name__)``
and bind context (``service=``, ``session=``, ``peer=``) rather than formatting
it into the message.  Passwords and message bodies are never logged.
"""
from __future__ import annotations

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


def setup(fmt: str = "json", level: str = "info", service: str | None = None, stream=None) -> None:
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
    structlog.configure(
        processors=[*processors, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Libraries that use stdlib logging (aiosmtpd, kopf, asyncio) go the same way.
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
