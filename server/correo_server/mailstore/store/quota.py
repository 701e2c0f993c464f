"""Usage and quota: how much a mailbox holds, and whether one more message fits.

:class:`UsageBook` keeps each folder's totals in memory (changed on the event
loop only, by the folder that changes; see :mod:`.threads`), so that quota
checks and ``/status`` never scan the disk.  :func:`check_room` is the
decision: the quota (``MailboxEntry.quota_bytes``; 0 or None: no limit) and
the free-space floor of the volume (``mailstore.minFreeBytes``), which keeps
the last bytes of the volume for the indexes and the queue.
"""
from __future__ import annotations

from pathlib import Path

from .. import maildir
from .errors import DiskFull, QuotaExceeded
from .values import Usage


class UsageBook:
    """Messages and bytes per folder of one mailbox."""

    def __init__(self) -> None:
        self._folders: dict[str, Usage] = {}

    def total(self) -> Usage:
        total = Usage()
        for u in self._folders.values():
            total += u
        return total

    def set(self, folder: str, usage: Usage) -> None:
        self._folders[folder] = usage

    def delta(self, folder: str, messages: int, size: int) -> None:
        u = self._folders.get(folder, Usage())
        self._folders[folder] = Usage(u.messages + messages, u.bytes + size)

    def rename(self, old: str, new: str) -> None:
        if old in self._folders:
            self._folders[new] = self._folders.pop(old)

    def drop(self, folder: str) -> None:
        self._folders.pop(folder, None)


def check_room(used: int, size: int, quota: int | None, free: int | None, min_free: int) -> None:
    """Raise :class:`QuotaExceeded` when ``size`` more bytes take ``used``
    over ``quota``, or :class:`DiskFull` when they would leave less than
    ``min_free`` of the ``free`` bytes on the volume (None: unknown)."""
    if quota and used + size > quota:
        raise QuotaExceeded(used, quota, size)
    if free is not None and free - size < min_free:
        raise DiskFull(f"not enough free space on the mail volume ({free} bytes free)")


def check_space(root: Path, used: int, size: int, quota: int | None, min_free: int) -> None:
    """:func:`check_room` with the volume's free space (a worker thread)."""
    try:
        free: int | None = maildir.free_bytes(root)
    except OSError:
        free = None
    check_room(used, size, quota, free, min_free)
