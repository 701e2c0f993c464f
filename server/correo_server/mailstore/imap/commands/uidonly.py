"""UIDONLY (RFC 9586): after ``ENABLE UIDONLY`` a session never sees nor
uses message sequence numbers —

- FETCH, STORE, SEARCH, COPY, MOVE, SORT and THREAD without UID, sequence
  numbers in a search program and QRESYNC's sequence-match data are
  refused ``BAD [UIDREQUIRED]``;
- FETCH data (answers and news of other sessions' changes alike) comes as
  ``* 17 UIDFETCH (FLAGS (\\Seen))``;
- expunges come as ``VANISHED`` (as under QRESYNC); SELECT gives no
  ``[UNSEEN n]``.  ``EXISTS`` still counts the messages.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .. import search as S
from ..states import Selected, SelectedView
from .base import Command, Registry, Reply, bad

if TYPE_CHECKING:
    from ..session import Session

NAME = "UIDONLY"
REFUSAL = "Message numbers are not allowed once UIDONLY is enabled"


def _uidonly(view: SelectedView) -> None:
    view.uidonly = True
    view.vanished = True


def _on_enable(s: "Session") -> None:
    if isinstance(s.state, Selected):
        _uidonly(s.state.view)


def _setup(s: "Session", view: SelectedView) -> None:
    if NAME in s.enabled:
        _uidonly(view)


def _check(s: "Session", cmd: Command) -> Reply | None:
    if NAME not in s.enabled:
        return None
    if type(cmd).uid_form and not cmd.uid and cmd.name != "EXPUNGE":
        return bad(REFUSAL, "UIDREQUIRED")
    key = getattr(cmd, "key", None)
    if isinstance(key, S.Key) and any(isinstance(k, S.Seq) and not k.set.saved for k in key.walk()):
        return bad(REFUSAL, "UIDREQUIRED")
    options = getattr(cmd, "options", None)
    qresync = options.get("QRESYNC") if options is not None and hasattr(options, "get") else None
    if qresync is not None and getattr(qresync, "seq_match", None) is not None:
        return bad(REFUSAL, "UIDREQUIRED")
    return None


def register(registry: Registry) -> None:
    registry.capability(NAME)
    registry.enable(NAME, _on_enable)
    registry.view_setup.append(_setup)
    registry.command_checks.append(_check)
