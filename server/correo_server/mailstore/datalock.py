"""One mailstore per data folder (:mod:`correo_server.folderlock`): two
mailstores on one ``mailstore.dataDir`` would write the same Maildirs and
indexes and hand out UIDs behind each other's backs."""
from __future__ import annotations

from pathlib import Path

from ..folderlock import FolderInUse as DataDirInUse
from ..folderlock import FolderLock

LOCK_FILE = ".correo-mailstore.lock"


def DataDirLock(data_dir: str | Path) -> FolderLock:  # noqa: N802 - reads as the class it makes
    return FolderLock(data_dir, LOCK_FILE, what="mail data folder", owner="mailstore", setting="mailstore.dataDir")


__all__ = ["LOCK_FILE", "DataDirInUse", "DataDirLock"]
