"""One queue per spool (:mod:`correo_server.folderlock`): two queues on one
``queue.spoolDir`` would replay the same journal, deliver the same messages
and remove each other's files."""
from __future__ import annotations

from pathlib import Path

from ..folderlock import FolderInUse as SpoolInUse
from ..folderlock import FolderLock

LOCK_FILE = ".correo-queue.lock"


def SpoolLock(spool_dir: str | Path) -> FolderLock:  # noqa: N802 - reads as the class it makes
    return FolderLock(spool_dir, LOCK_FILE, what="queue spool", owner="queue", setting="queue.spoolDir")


__all__ = ["LOCK_FILE", "SpoolInUse", "SpoolLock"]
