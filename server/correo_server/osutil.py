"""Small operating-system facts every part needs: making a rename durable
(fsync of the directory), making many new files durable at once (syncfs),
replacing a small file atomically, and whether a process is still there."""
from __future__ import annotations

import ctypes
import errno
import os
import platform
import sys
import tempfile
from pathlib import Path


def fsync_dir(path: str | os.PathLike[str] | Path) -> None:
    """fsync a directory, so that a rename or create inside it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_syncfs():
    """syncfs(2) where it reports write errors (Linux 5.8 and later)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        if tuple(int(x) for x in platform.release().split(".")[:2]) < (5, 8):
            return None
    except ValueError:
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_syncfs = _load_syncfs()


def can_sync_filesystem() -> bool:
    return _syncfs is not None


def sync_filesystem(fd: int) -> None:
    """syncfs(2): everything written to the file system that holds ``fd``
    reaches the disk, with one journal commit and one cache flush (where
    fsyncing each of N new files costs N of each).  Raises OSError when the
    sync fails or a write since ``fd`` was opened failed (Linux 5.8 and
    later report those).  Only where :func:`can_sync_filesystem`."""
    if _syncfs is None:
        raise OSError(errno.ENOSYS, "syncfs is not available here")
    if _syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` (file mode ``mode``): a temporary file of
    its own beside it (so that two writers of one file never rename each
    other's away), fsync, rename, fsync of the folder.  A crash leaves the
    old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        if mode != 0o600:  # mkstemp's own
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (also one we may not signal)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
