"""What the Sieve tests share: the corpus messages and a one-call runner."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from correo_server.sieve import Context, Envelope, Result, compile_script, run
from correo_server.sieve.tracking import MemoryState

CORPUS = Path(__file__).parent / "corpus"


def message(name: str) -> bytes:
    return (CORPUS / "messages" / name).read_bytes()


def mail(text: str) -> bytes:
    """A message written with LF in a test, as CRLF bytes."""
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


NOW = dt.datetime(2024, 3, 4, 10, 30, tzinfo=dt.timezone.utc).timestamp()  # a Monday


def sieve(script: str, msg: bytes, *, sender: str = "coyote@desert.example.org",
          recipient: str = "roadrunner@acme.example.com", **context) -> Result:
    context.setdefault("mailbox", recipient)
    context.setdefault("now", NOW)
    context.setdefault("zone", dt.timezone.utc)
    context.setdefault("state", MemoryState())
    return run(compile_script(script), msg, Envelope(sender, recipient), Context(**context))


class DictIncludes:
    """An include resolver over a dict {(location, name): source}."""

    def __init__(self, scripts: dict[tuple[str, str], str]) -> None:
        self.scripts = scripts
        self.calls: list[tuple[str, str]] = []

    def resolve(self, name: str, location: str):
        self.calls.append((location, name))
        text = self.scripts.get((location, name))
        return None if text is None else compile_script(text, name)


@pytest.fixture
def msg_a() -> bytes:
    return message("rfc-a.eml")


@pytest.fixture
def msg_b() -> bytes:
    return message("rfc-b.eml")
