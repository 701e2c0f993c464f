"""A mailbox's UIDVALIDITY counter: each folder (new, re-created, or with
its index rebuilt) gets a value greater than any the mailbox used before,
so that a client's cache of a deleted folder is never taken for the new
one.  The counter is its own small file at the mailbox root, apart from any
index.  Used from worker threads, under the mailbox lock."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .. import maildir

UIDVALIDITY_FILE = "correo-uidvalidity"  # the last UIDVALIDITY given out in this mailbox


class UidValidityCounter:
    def __init__(self, root: Path, clock: Callable[[], float]) -> None:
        self.root = root
        self.clock = clock
        self._last = 0

    def _read(self) -> int:
        try:
            return int((self.root / UIDVALIDITY_FILE).read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def allocate(self) -> int:
        value = max(int(self.clock()), self._read() + 1, self._last + 1)
        self._last = value
        maildir.write_atomic(self.root / UIDVALIDITY_FILE, f"{value}\n")
        return value

    def note(self, value: int) -> None:
        """A UIDVALIDITY taken over from elsewhere: later ones must exceed it."""
        if value > self._read():
            maildir.write_atomic(self.root / UIDVALIDITY_FILE, f"{value}\n")
        self._last = max(self._last, value)
