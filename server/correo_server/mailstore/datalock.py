"""One mailstore per data folder: an exclusive lock held while it runs.

Two mailstores serving the same ``mailstore.dataDir`` (one left running,
orphaned, when a second is started) would both write the same Maildirs and
indexes and hand out UIDs behind each other's backs.
:meth:`.service.MailstoreService.start` therefore takes
``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``DATA_DIR/.correo-mailstore.lock``
before it opens the store, and holds it until :meth:`~.service.MailstoreService.stop`.
The kernel drops the lock when the process ends, however it ends (SIGKILL,
OOM kill, crash), so a stale lock never blocks a restart; the file itself
stays and is harmless.  The holder writes its pid and host name into the
file, so that the second one can say who holds the folder
(:class:`DataDirInUse`).

``flock`` locks belong to an open file description: a second
:class:`DataDirLock` on the same folder is refused even inside the same
process (two services in one test), and a child process never inherits the
lock (the descriptor is not inheritable).
"""
from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from ..serve import CannotStart

LOCK_FILE = ".correo-mailstore.lock"


class DataDirInUse(CannotStart):
    """Another mailstore holds the data folder."""

    def __init__(self, data_dir: Path, pid: int | None, host: str | None) -> None:
        holder = f"pid {pid}" if pid is not None else "pid unknown"
        if host and host != socket.gethostname():
            holder += f" on {host}"
        super().__init__(f"the mail data folder {data_dir} is in use by another mailstore ({holder}); "
                         f"stop that one first, or give this one another mailstore.dataDir")
        self.data_dir, self.pid, self.host = data_dir, pid, host


def read_holder(path: Path) -> tuple[int | None, str | None]:
    """(pid, host) written by the holder of the lock file at ``path``; None
    for what is missing or unreadable (the holder may not have written yet)."""
    try:
        lines = path.read_text(encoding="ascii", errors="replace").split()
    except OSError:
        return None, None
    pid = int(lines[0]) if lines and lines[0].isdigit() else None
    return pid, (lines[1] if len(lines) > 1 else None)


class DataDirLock:
    """The exclusive lock on one data folder (see the module docstring)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`DataDirInUse` at once (never waits)."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirInUse(self.data_dir, *read_holder(self.path)) from None
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
