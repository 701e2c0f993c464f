"""The time mail rules read: the system clock, or one tests move.

Mail rules decide by the time (an auto-reply's start and end, "once per
sender per interval", Sieve's ``currentdate``), and an interval is days.
In-process tests give :class:`~..context.MailstoreContext` a ``clock``.  A
test that runs the real processes (``correo up``) sets
``CORREO_CLOCK_OFFSET_FILE`` to a file holding a number of seconds: the
mailstore's rules then read the system time plus that offset, read again on
every delivery, so the test jumps a week ahead by writing ``604800`` into
the file.  Unset (production), nothing is read and the clock is
``time.time``.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

ENV = "CORREO_CLOCK_OFFSET_FILE"


def offset_clock(path: str | os.PathLike[str]) -> Callable[[], float]:
    """``time.time()`` plus the seconds in ``path`` (0 while it is missing or unreadable)."""
    file = Path(path)

    def now() -> float:
        try:
            offset = float(file.read_text().strip() or 0)
        except (OSError, ValueError):
            offset = 0.0
        return time.time() + offset
    return now


def from_environment() -> Callable[[], float] | None:
    path = os.environ.get(ENV)
    return offset_clock(path) if path else None
