"""A mailbox's Sieve scripts on the mailstore's data folder.

Each mailbox keeps its scripts beside its Maildir, in
``<dataDir>/<mailbox>/correo-sieve/``: one file per script
(``scripts/<name>.sieve``, the name percent-encoded where a file name could
not hold it) and ``active``, which names the active script (absent: none).
Every write is atomic and durable: a temporary file, fsync, rename, fsync of
the folder, so a crash leaves the old script or the new one, never a mix
(RFC 5804 2.6: a failed PUTSCRIPT never touches the old script).

:class:`ScriptStorage` is blocking file work; ManageSieve calls it on the
store's worker threads.  Final delivery will read ``active()`` and use
:meth:`ScriptStorage.resolver` as the Sieve ``include`` resolver.  Limits:
``max_scripts`` per mailbox and ``max_script_bytes`` per script
(RFC 5804 1.5 QUOTA/MAXSCRIPTS and QUOTA/MAXSIZE).
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from ...osutil import fsync_dir, write_atomic
from ...sieve import Script, compile_script
from ..store.mailbox import address_dir

FOLDER = "correo-sieve"
SUFFIX = ".sieve"
ACTIVE_FILE = "active"
MAX_SCRIPTS = 50
MAX_SCRIPT_BYTES = 256 * 1024

_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(path: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(path, threading.Lock())


class ScriptError(Exception):
    """Why a script operation cannot be done; ``code`` is the RFC 5804 response code."""

    code = ""


class NoSuchScript(ScriptError):
    code = "NONEXISTENT"


class ScriptExists(ScriptError):
    code = "ALREADYEXISTS"


class ScriptActive(ScriptError):
    code = "ACTIVE"


class QuotaExceeded(ScriptError):
    def __init__(self, message: str, code: str = "QUOTA") -> None:
        super().__init__(message)
        self.code = code


def file_name(name: str) -> str:
    """A script name as a file name: '%', '/', '\\', control characters and a
    leading dot percent-encoded (UTF-8); everything else as it is."""
    out = []
    for i, ch in enumerate(name):
        if ch in "%/\\" or ord(ch) < 0x20 or ord(ch) == 0x7F or (i == 0 and ch == "."):
            out.append("".join(f"%{b:02X}" for b in ch.encode("utf-8")))
        else:
            out.append(ch)
    return "".join(out) + SUFFIX


def name_fits(name: str) -> bool:
    """The file system holds 255 octets per name."""
    return len(file_name(name).encode("utf-8")) <= 250


def script_name(filename: str) -> str | None:
    if not filename.endswith(SUFFIX) or filename.startswith("."):
        return None
    return unquote(filename[: -len(SUFFIX)])


@dataclass(frozen=True)
class ScriptInfo:
    name: str
    size: int
    active: bool


class ScriptStorage:
    def __init__(self, root: Path, *, max_scripts: int = MAX_SCRIPTS,
                 max_script_bytes: int = MAX_SCRIPT_BYTES) -> None:
        self.root = Path(root)
        self.scripts = self.root / "scripts"
        self.max_scripts = max_scripts
        self.max_script_bytes = max_script_bytes
        self._lock = _lock_for(self.root)

    @classmethod
    def for_mailbox(cls, data_dir: Path, address: str, **limits) -> "ScriptStorage":
        return cls(Path(data_dir) / address_dir(address) / FOLDER, **limits)

    # -- reading ---------------------------------------------------------------------
    def _path(self, name: str) -> Path:
        return self.scripts / file_name(name)

    def active(self) -> str | None:
        try:
            name = (self.root / ACTIVE_FILE).read_text("utf-8").strip("\n")
        except FileNotFoundError:
            return None
        return name if name and self._path(name).exists() else None

    def list(self) -> list[ScriptInfo]:
        active = self.active()
        out: list[ScriptInfo] = []
        try:
            entries = list(os.scandir(self.scripts))
        except FileNotFoundError:
            return out
        for entry in entries:
            name = script_name(entry.name)
            if name is not None and entry.is_file():
                out.append(ScriptInfo(name, entry.stat().st_size, name == active))
        return sorted(out, key=lambda s: s.name)

    def get(self, name: str) -> bytes:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            raise NoSuchScript(f"There is no script called \"{name}\".") from None

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    # -- quota ---------------------------------------------------------------------------
    def check_space(self, name: str, size: int) -> None:
        """Raises :class:`QuotaExceeded` when storing ``size`` octets as ``name`` would not fit."""
        if size > self.max_script_bytes:
            raise QuotaExceeded(f"A script may hold at most {self.max_script_bytes} octets.", "QUOTA/MAXSIZE")
        if not self.exists(name) and len(self.list()) >= self.max_scripts:
            raise QuotaExceeded(f"At most {self.max_scripts} scripts per mailbox; delete one first.",
                                "QUOTA/MAXSCRIPTS")

    # -- writing -------------------------------------------------------------------------
    def _write(self, path: Path, data: bytes) -> None:
        write_atomic(path, data)

    def put(self, name: str, data: bytes) -> None:
        with self._lock:
            self.check_space(name, len(data))
            self._write(self._path(name), data)

    def set_active(self, name: str) -> None:
        """Make ``name`` the active script; "" deactivates (RFC 5804 2.8)."""
        with self._lock:
            if not name:
                try:
                    (self.root / ACTIVE_FILE).unlink()
                    fsync_dir(self.root)
                except FileNotFoundError:
                    pass
                return
            if not self.exists(name):
                raise NoSuchScript(f"There is no script called \"{name}\".")
            self._write(self.root / ACTIVE_FILE, name.encode("utf-8") + b"\n")

    def delete(self, name: str) -> None:
        with self._lock:
            if not self.exists(name):
                raise NoSuchScript(f"There is no script called \"{name}\".")
            if self.active() == name:
                raise ScriptActive("You may not delete the active script; deactivate it first (SETACTIVE \"\").")
            self._path(name).unlink()
            fsync_dir(self.scripts)

    def rename(self, old: str, new: str) -> None:
        with self._lock:
            if not self.exists(old):
                raise NoSuchScript(f"There is no script called \"{old}\".")
            if self.exists(new):
                raise ScriptExists(f"A script called \"{new}\" already exists.")
            was_active = self.active() == old
            os.rename(self._path(old), self._path(new))
            fsync_dir(self.scripts)
            if was_active:  # RFC 5804 2.11: the renamed script stays active
                self._write(self.root / ACTIVE_FILE, new.encode("utf-8") + b"\n")

    # -- for delivery ----------------------------------------------------------------------
    def compiled_active(self) -> Script | None:
        name = self.active()
        if name is None:
            return None
        try:
            return compile_script(self.get(name), name)
        except NoSuchScript:
            return None

    def resolver(self, global_dir: Path | None = None) -> "StorageIncludes":
        return StorageIncludes(self, global_dir)


class StorageIncludes:
    """The Sieve ``include`` resolver over a mailbox's scripts (``:personal``)
    and an optional folder of site scripts (``:global``)."""

    def __init__(self, storage: ScriptStorage, global_dir: Path | None) -> None:
        self.storage = storage
        self.global_dir = global_dir
        self._cache: dict[tuple[str, str], Script | None] = {}

    def resolve(self, name: str, location: str) -> Script | None:
        key = (location, name)
        if key not in self._cache:
            try:
                if location == "global":
                    if self.global_dir is None:
                        data = None
                    else:
                        path = self.global_dir / file_name(name)
                        data = path.read_bytes() if path.is_file() else None
                else:
                    data = self.storage.get(name)
            except NoSuchScript:
                data = None
            self._cache[key] = None if data is None else compile_script(data, name)
        return self._cache[key]
