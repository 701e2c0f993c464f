"""Finding a running ``correo up`` from another command, and saying why there
is none in one wording.

``correo up`` writes ``<data>/state.json`` (its pid, ports, endpoints; the
data folder's layout is ``correo_operator.local.layout``).  ``correo status``
and ``correo apply`` (operator side) and ``correo queue``
(:mod:`.queue.admin`, server side) all read it through :func:`find`, so that
each says "no local stack is running" the same way, with the same reason.
This module is the server side's so that both layers can use it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .osutil import pid_alive

STATE_FILE = "state.json"


class NotRunning(Exception):
    """No ``correo up`` runs with this data folder; ``str()`` says why and what to do."""

    def __init__(self, data: str | os.PathLike[str], why: str) -> None:
        self.data, self.why = Path(data), why
        super().__init__(f"no local stack is running with data in {data} ({why}); start one with `correo up`")


def find(data: str | os.PathLike[str]) -> dict[str, Any]:
    """The state of the ``correo up`` running with data in ``data``, or
    :class:`NotRunning` saying why not (no state.json, unreadable, or its
    process has exited)."""
    path = Path(data) / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotRunning(data, f"no {STATE_FILE}") from None
    except (OSError, ValueError) as exc:
        raise NotRunning(data, f"cannot read {STATE_FILE}: {exc}") from None
    if not isinstance(state, dict):
        raise NotRunning(data, f"{STATE_FILE} is not a JSON object")
    pid = state.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        raise NotRunning(data, f"{STATE_FILE} names no pid")
    if not pid_alive(pid):
        raise NotRunning(data, f"its correo up, pid {pid}, has exited")
    return state
