"""One process per data folder: an exclusive lock held while a service runs.

Two queues on one spool, or two mailstores on one Maildir tree (an orphaned
``correo serve`` left running when a new one starts), would both write the
same files behind each other's backs.  A service therefore takes
``fcntl.flock(LOCK_EX | LOCK_NB)`` on a lock file in its folder before it
reads anything, and holds it until it stops.  The kernel drops the lock when
the process ends, however it ends (SIGKILL, OOM kill, crash), so a stale lock
never blocks a restart; the file itself stays and is harmless.  The holder
writes its pid and host name into the file, so that the second one can say
who holds the folder (:class:`FolderInUse`).

``flock`` locks belong to an open file description: a second
:class:`FolderLock` on the same folder is refused even inside the same
process (two services in one test), and a child process never inherits the
lock (the descriptor is close-on-exec).
"""
from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path


class CannotStart(Exception):
    """A service cannot start for a reason a person can fix; ``correo serve``
    prints the message (no traceback) and exits 1."""


class FolderInUse(CannotStart):
    """Another process holds the folder."""

    def __init__(self, lock: "FolderLock", pid: int | None, host: str | None) -> None:
        holder = f"pid {pid}" if pid is not None else "pid unknown"
        if host and host != socket.gethostname():
            holder += f" on {host}"
        super().__init__(f"the {lock.what} {lock.folder} is in use by another {lock.owner} ({holder}); "
                         f"stop that one first, or give this one another {lock.setting}")
        self.folder, self.pid, self.host = lock.folder, pid, host


def read_holder(path: Path) -> tuple[int | None, str | None]:
    """(pid, host) written by the holder of the lock file at ``path``; None
    for what is missing or unreadable (the holder may not have written yet)."""
    try:
        words = path.read_text(encoding="ascii", errors="replace").split()
    except OSError:
        return None, None
    pid = int(words[0]) if words and words[0].isdigit() else None
    return pid, (words[1] if len(words) > 1 else None)


class FolderLock:
    """The exclusive lock on one folder (see the module docstring).

    ``what``, ``owner`` and ``setting`` name the folder, the kind of process
    and the configuration key in the refusal: "the queue spool X is in use by
    another queue (pid N); … give this one another queue.spoolDir"."""

    def __init__(self, folder: str | os.PathLike[str], lock_file: str, *, what: str, owner: str,
                 setting: str) -> None:
        self.folder = Path(folder)
        self.path = self.folder / lock_file
        self.what, self.owner, self.setting = what, owner, setting
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`FolderInUse` at once (never waits)."""
        if self._fd is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderInUse(self, *read_holder(self.path)) from None
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
