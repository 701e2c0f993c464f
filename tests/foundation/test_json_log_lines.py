"""What a service writes to its log in JSON (``correo serve``, Kubernetes):
one object per line with the event, the service, the level and a UTC
timestamp, and the traceback of an exception, also when the loggers keep
their methods (``logs.setup(..., cache=True)``, as ``correo serve`` does)."""
from __future__ import annotations

import asyncio
import io
import json
import re

import structlog

from correo_server import logs

STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\Z")


def flush() -> None:
    structlog.get_config()["logger_factory"]()._file.flush()  # the TurnBuffer


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_has_its_keys_in_order_with_a_utc_timestamp():
    log = logs.get("test.json_lines")  # made before logging is set up, as module loggers are
    stream = io.StringIO()
    try:
        logs.setup("json", service="queue", stream=stream, cache=True)

        async def main():
            log.info("delivered", queue_id="Q1", rcpt="bob@example.com", size=12, what=object)
            log.debug("not at info")
            log.bind(peer="192.0.2.1").warning("slow", seconds=1.5)
            with structlog.contextvars.bound_contextvars(namespace="mail"):
                log.info("in_context")
            try:
                raise ValueError("bad")
            except ValueError:
                log.exception("failed", queue_id="Q2")
        asyncio.run(main())
        flush()  # lines written in an event loop are held for a moment
        logs.setup("json", service="mailstore", stream=stream, cache=True)  # set up again: loggers follow
        log.info("again")
    finally:
        logs.setup("json", stream=io.StringIO())
    first, second, third, fourth, fifth = lines(stream)
    assert list(first) == ["queue_id", "rcpt", "size", "what", "event", "service", "level", "timestamp"]
    assert first["event"] == "delivered" and first["level"] == "info" and first["service"] == "queue"
    assert first["size"] == 12 and first["what"] == "<class 'object'>"
    assert STAMP.match(first["timestamp"])
    assert (second["peer"], second["level"], second["seconds"]) == ("192.0.2.1", "warning", 1.5)
    assert third["namespace"] == "mail"
    assert fourth["level"] == "error" and "ValueError: bad" in fourth["exception"]
    assert (fifth["event"], fifth["service"]) == ("again", "mailstore")


def test_the_timestamp_is_the_time_of_the_line():
    from datetime import datetime, timezone

    now = logs._UtcNow()
    before = datetime.now(timezone.utc)
    stamp = now()
    after = datetime.now(timezone.utc)
    when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert before <= when <= after
