"""A mailbox's tracking state on disk: vacation replies sent, duplicate ids seen.

Implements :class:`~.context.TrackingState` (``seen``) for the interpreter,
and ``record`` for delivery to apply the :class:`~.actions.StateUpdate`
values a run returned.  One small JSON file per mailbox, ``{key: expires}``
with hashed keys (no addresses or message ids in clear, RFC 7352 6), written
atomically (temporary file, fsync, rename, fsync of the folder) so that a
crash leaves the old or the new state, never half of one.  Expired entries
are dropped on write, and the oldest go first beyond ``max_entries`` (RFC
5230 4.2 asks for at least 1000).  :class:`MemoryState` is the same in
memory, for tests and for callers that keep state elsewhere.

Not safe for two writers at once: the mailstore serialises deliveries per
mailbox.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from ..osutil import write_atomic
from .actions import StateUpdate

MAX_ENTRIES = 10000


def _prune(entries: dict[str, float], now: float, max_entries: int) -> dict[str, float]:
    live = {k: v for k, v in entries.items() if v > now}
    if len(live) > max_entries:
        keep = sorted(live.items(), key=lambda kv: kv[1])[-max_entries:]
        live = dict(keep)
    return live


class MemoryState:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.entries: dict[str, float] = {}
        self.max_entries = max_entries

    def seen(self, key: str, now: float) -> bool:
        return self.entries.get(key, 0.0) > now

    def record(self, updates: Iterable[StateUpdate], now: float) -> None:
        for u in updates:
            self.entries[u.key] = u.expires
        self.entries = _prune(self.entries, now, self.max_entries)


class FileState:
    def __init__(self, path: str | os.PathLike[str], max_entries: int = MAX_ENTRIES) -> None:
        self.path = Path(path)
        self.max_entries = max_entries
        self._cache: dict[str, float] | None = None
        self._mtime: float | None = None

    def _load(self) -> dict[str, float]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._cache, self._mtime = {}, None
            return self._cache
        if self._cache is not None and self._mtime == st.st_mtime:
            return self._cache
        try:
            data = json.loads(self.path.read_text("utf-8"))
            entries = {str(k): float(v) for k, v in data.get("entries", {}).items()}
        except (ValueError, OSError, AttributeError, TypeError):
            entries = {}  # a damaged file forgets; it never blocks delivery
        self._cache, self._mtime = entries, st.st_mtime
        return entries

    def seen(self, key: str, now: float) -> bool:
        return self._load().get(key, 0.0) > now

    def record(self, updates: Iterable[StateUpdate], now: float) -> None:
        updates = list(updates)
        if not updates:
            return
        entries = dict(self._load())
        for u in updates:
            entries[u.key] = u.expires
        entries = _prune(entries, now, self.max_entries)
        write_atomic(self.path, json.dumps({"version": 1, "entries": entries},
                                           separators=(",", ":")).encode("utf-8"))
        self._cache, self._mtime = entries, self.path.stat().st_mtime
