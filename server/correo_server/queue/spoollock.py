"""One queue per spool: an exclusive lock held while the queue runs.

Two queues on the same ``queue.spoolDir`` (an orphaned ``correo serve
queue`` left running when a new one starts) would both replay the same
journal, deliver the same messages and remove each other's files.
:meth:`.service.QueueService.start` therefore takes
``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``SPOOL_DIR/.correo-queue.lock``
before it reads the spool, and holds it until
:meth:`~.service.QueueService.stop`.  The kernel drops the lock when the
process ends, however it ends (SIGKILL, OOM kill, crash), so a stale lock
never blocks a restart; the file stays and is harmless (recovery looks only
at ``msg/``, ``tmp/``, the journals and the snapshot).  The holder writes its
pid and host name into the file, so that the second one can say who holds
the spool (:class:`SpoolInUse`).

``flock`` locks belong to an open file description: a second
:class:`SpoolLock` on the same folder is refused even inside the same
process (two services in one test), and a child process never inherits the
lock (the descriptor is close-on-exec).
"""
from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from ..serve import CannotStart

LOCK_FILE = ".correo-queue.lock"


class SpoolInUse(CannotStart):
    """Another queue holds the spool folder."""

    def __init__(self, spool_dir: Path, pid: int | None, host: str | None) -> None:
        holder = f"pid {pid}" if pid is not None else "pid unknown"
        if host and host != socket.gethostname():
            holder += f" on {host}"
        super().__init__(f"the queue spool {spool_dir} is in use by another queue ({holder}); "
                         "stop that one first, or give this one another queue.spoolDir")
        self.spool_dir, self.pid, self.host = spool_dir, pid, host


def read_holder(path: Path) -> tuple[int | None, str | None]:
    """(pid, host) written by the holder of the lock file at ``path``; None
    for what is missing or unreadable (the holder may not have written yet)."""
    try:
        words = path.read_text(encoding="ascii", errors="replace").split()
    except OSError:
        return None, None
    pid = int(words[0]) if words and words[0].isdigit() else None
    return pid, (words[1] if len(words) > 1 else None)


class SpoolLock:
    """The exclusive lock on one spool folder (see the module docstring)."""

    def __init__(self, spool_dir: str | os.PathLike[str]) -> None:
        self.spool_dir = Path(spool_dir)
        self.path = self.spool_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`SpoolInUse` at once (never waits)."""
        if self._fd is not None:
            return
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolInUse(self.spool_dir, *read_holder(self.path)) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode("ascii", "replace"), 0)
        except OSError:
            pass  # a full disk must not stop the lock from working; the pid is only informative
        self._fd = fd

    def release(self) -> None:
        """Let go (the pid is cleared first, so nobody reports a stale holder)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        os.close(fd)  # drops the flock


__all__ = ["LOCK_FILE", "SpoolInUse", "SpoolLock", "read_holder"]
