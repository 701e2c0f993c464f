"""Maildir on disk: file names, flags in names, folder names, crash-safe writes.

The bottom layer of the mailstore's storage.  :mod:`.index` keeps the UIDs
and flags in SQLite beside each folder; :mod:`.store` ties the two together.
Everything here is synchronous file-system work; callers run it in a worker
thread (``asyncio.to_thread``) when it may block for long.

Layout of one mailbox (what Dovecot's ``maildir:~/Maildir`` with the Maildir++
layout reads)::

    <data_dir>/<address>/            INBOX: cur/ new/ tmp/
    <data_dir>/<address>/.Sent/      the folder "Sent" (also .Drafts .Trash .Junk)
    <data_dir>/<address>/.Work.2024/ the folder "Work/2024" (IMAP delimiter "/")

A message file is named ``<unique>,S=<size>,W=<rfc822 size>[:2,<flags>]``
(Dovecot's convention).  Flags in the name are Maildir letters: ``D`` Draft,
``F`` Flagged, ``R`` Answered (replied), ``S`` Seen, ``T`` Deleted (trashed),
then lower-case letters for keywords, numbered in the folder's
``dovecot-keywords`` file.  The index is the authority for flags; names
follow it so that another Maildir reader sees the same state.

Folder names are stored as they travel over IMAP (modified UTF-7); a ``.``
or ``\\`` inside one level of a name is escaped as ``\\2e`` / ``\\5c`` (Dovecot's
``maildir_name_escape_char`` convention) because ``.`` separates levels on disk.
"""
from __future__ import annotations

import errno
import itertools
import os
import socket
import threading
import time
from pathlib import Path

from ..osutil import fsync_dir

DELIMITER = "/"  # the IMAP hierarchy delimiter
INFO_SEP = ":2,"
SUBDIRS = ("cur", "new", "tmp")

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_FLAG_LETTER = {"\\Draft": "D", "\\Flagged": "F", "\\Answered": "R", "\\Seen": "S", "\\Deleted": "T"}
_LETTER_FLAG = {v: k for k, v in _FLAG_LETTER.items()}
_CANONICAL = {f.lower(): f for f in (*SYSTEM_FLAGS, "\\Recent")}

KEYWORD_LETTERS = "abcdefghijklmnopqrstuvwxyz"

_counter = itertools.count(1)
_counter_lock = threading.Lock()


class StorageError(OSError):
    """A file-system problem the caller reports as a temporary failure."""


def canonical_flag(flag: str) -> str:
    """System flags compare case-insensitively and are kept in RFC spelling;
    keywords are kept as given."""
    return _CANONICAL.get(flag.lower(), flag)


def _hostname() -> str:
    host = socket.gethostname() or "localhost"
    return host.replace("/", "\\057").replace(":", "\\072").replace(",", "\\054")


HOSTNAME = _hostname()


def unique_name(now: float | None = None) -> str:
    """A name unique on this host (Maildir's ``time.MusecPpidQn.host``)."""
    now = time.time() if now is None else now
    with _counter_lock:
        n = next(_counter)
    sec = int(now)
    usec = int((now - sec) * 1_000_000)
    return f"{sec}.M{usec}P{os.getpid()}Q{n}.{HOSTNAME}"


def base_name(filename: str) -> str:
    """The part of a message file name that never changes (without ``:2,flags``)."""
    return filename.split(":", 1)[0]


def sizes_suffix(data: bytes) -> str:
    """``,S=<bytes>,W=<bytes with CRLF line ends>`` as Dovecot writes it."""
    bare_lf = data.count(b"\n") - data.count(b"\r\n")
    return f",S={len(data)},W={len(data) + bare_lf}"


def fresh_base(old_base: str) -> str:
    """A new unique name keeping the ``,S=`` and ``,W=`` sizes of ``old_base``."""
    sizes = "".join("," + part for part in old_base.split(",")[1:] if part[:2] in ("S=", "W="))
    return unique_name() + sizes


def size_from_name(filename: str) -> int | None:
    for part in base_name(filename).split(",")[1:]:
        if part.startswith("S=") and part[2:].isdigit():
            return int(part[2:])
    return None


def info_for(flags: frozenset[str] | set[str], keyword_letters: dict[str, str]) -> str:
    """The ``:2,`` info suffix for a set of flags (letters in ASCII order)."""
    letters = [_FLAG_LETTER[f] for f in flags if f in _FLAG_LETTER]
    letters += [keyword_letters[f] for f in flags if f in keyword_letters]
    return INFO_SEP + "".join(sorted(letters))


def flags_from_name(filename: str, letter_keywords: dict[str, str]) -> frozenset[str]:
    """The flags a file name carries (for files the index does not know)."""
    _, sep, info = filename.partition(INFO_SEP)
    if not sep:
        return frozenset()
    flags = set()
    for ch in info:
        if ch in _LETTER_FLAG:
            flags.add(_LETTER_FLAG[ch])
        elif ch in letter_keywords:
            flags.add(letter_keywords[ch])
    return frozenset(flags)


# ---------------------------------------------------------------------------
# Folder names <-> directories
# ---------------------------------------------------------------------------

def is_inbox(name: str) -> bool:
    return name.upper() == "INBOX"


def normalize_name(name: str) -> str:
    """``inbox`` → ``INBOX`` (only INBOX is case-insensitive); ``INBOX/x`` keeps x."""
    if is_inbox(name):
        return "INBOX"
    head, sep, rest = name.partition(DELIMITER)
    if sep and is_inbox(head):
        return "INBOX" + DELIMITER + rest
    return name


class BadFolderName(ValueError):
    pass


def check_name(name: str) -> str:
    """Validate a folder name (already mUTF-7 decoded for checks is not needed:
    any printable name is fine); returns the normalized name."""
    name = normalize_name(name)
    if not name or name.startswith(DELIMITER) or name.endswith(DELIMITER) or (DELIMITER * 2) in name:
        raise BadFolderName("empty hierarchy level in the name")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise BadFolderName("control characters in the name")
    if "*" in name or "%" in name:
        raise BadFolderName("wildcards are not allowed in names")
    for level in name.split(DELIMITER):
        if level in (".", ".."):
            raise BadFolderName("'.' and '..' are not folder names")
    if len(name.encode("utf-8")) > 200:
        raise BadFolderName("name too long")
    return name


def _escape_level(level: str) -> str:
    return level.replace("\\", "\\5c").replace(".", "\\2e")


def _unescape_level(level: str) -> str:
    return level.replace("\\2e", ".").replace("\\5c", "\\")


def dir_for(name: str) -> str:
    """Directory (relative to the mailbox root) of a folder: ``""`` for INBOX."""
    name = normalize_name(name)
    if name == "INBOX":
        return ""
    return "." + ".".join(_escape_level(level) for level in name.split(DELIMITER))


def name_for(dirname: str) -> str | None:
    """Folder name of a Maildir++ directory name (``.a.b`` → ``a/b``), or None
    when the directory is not a folder."""
    if not dirname.startswith(".") or dirname in (".", ".."):
        return None
    levels = dirname[1:].split(".")
    if any(not level for level in levels):
        return None
    return normalize_name(DELIMITER.join(_unescape_level(level) for level in levels))


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------



def make_folder(path: Path, *, subfolder: bool) -> None:
    """Create ``cur/ new/ tmp/`` (and Maildir++'s ``maildirfolder`` marker)."""
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    for sub in SUBDIRS:
        (path / sub).mkdir(exist_ok=True)
    if subfolder:
        marker = path / "maildirfolder"
        if not marker.exists():
            marker.touch()
    if created:
        fsync_dir(path)
        fsync_dir(path.parent)


MAX_NAMED_KEYS = 4  # delivery keys a file name carries (the index holds them all)


def keys_suffix(keys: tuple[str, ...] | list[str]) -> str:
    """``,K=<key>`` for each delivery key (valid keys are file-name safe;
    Dovecot ignores fields it does not know)."""
    return "".join(f",K={k}" for k in list(keys)[:MAX_NAMED_KEYS])


def keys_from_name(filename: str) -> list[str]:
    """The delivery keys a message file's name carries."""
    return [part[2:] for part in base_name(filename).split(",")[1:] if part.startswith("K=") and len(part) > 2]


def write_tmp(folder: Path, data: bytes, *, mtime: float | None = None, now: float | None = None,
              keys: tuple[str, ...] | list[str] = (), sync: bool = True) -> Path:
    """Write ``data`` to ``tmp/`` and fsync it (unless ``sync`` is false: the
    caller makes it durable, e.g. with a group's syncfs); returns the tmp
    path.  The file's mtime is set to ``mtime`` (the message's internal date); its name
    carries the delivery ``keys`` (so that a crash before the index commit
    still knows them: :mod:`.store.repair`)."""
    name = unique_name(now) + sizes_suffix(data) + (keys_suffix(keys) if keys else "")
    path = folder / "tmp" / name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        if mtime is not None:
            os.utime(path, (mtime, mtime))
    except OSError:
        try:
            path.unlink()
        except OSError:
            pass
        raise
    return path


def link_tmp(folder: Path, source: Path, *, mtime: float | None = None) -> Path:
    """Put a copy of an existing message file into ``tmp/`` (a hard link when
    possible, as Dovecot does; else a real, fsynced copy)."""
    path = folder / "tmp" / fresh_base(base_name(source.name))
    try:
        os.link(source, path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise
        return write_tmp(folder, source.read_bytes(), mtime=mtime)
    return path


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def scan(folder: Path) -> dict[str, str]:
    """Every message file of a folder: base name → path relative to the folder
    (``new/x`` or ``cur/x:2,S``)."""
    found: dict[str, str] = {}
    for sub in ("new", "cur"):
        try:
            entries = os.listdir(folder / sub)
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.startswith("."):
                continue
            found[base_name(entry)] = f"{sub}/{entry}"
    return found


def clean_tmp(folder: Path, older_than: float = 0.0, now: float | None = None) -> int:
    """Remove files left in ``tmp/`` by an interrupted write; returns how many."""
    now = time.time() if now is None else now
    removed = 0
    try:
        entries = os.listdir(folder / "tmp")
    except FileNotFoundError:
        return 0
    for entry in entries:
        path = folder / "tmp" / entry
        try:
            if now - path.stat().st_mtime >= older_than or older_than == 0:
                path.unlink()
                removed += 1
        except OSError:
            continue
    return removed


def write_atomic(path: Path, text: str) -> None:
    """Replace a small file atomically (write beside it, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# ---------------------------------------------------------------------------
# Taking over a Maildir Dovecot kept (migration): its UIDs, keywords, subscriptions
# ---------------------------------------------------------------------------

def read_dovecot_uidlist(folder: Path) -> tuple[int | None, int, dict[str, int]]:
    """``dovecot-uidlist`` → (UIDVALIDITY, next UID, base name → UID); formats
    1 and 3.  (None, 1, {}) when there is none or it cannot be read."""
    try:
        lines = (folder / "dovecot-uidlist").read_text("utf-8", "replace").splitlines()
    except OSError:
        return None, 1, {}
    if not lines:
        return None, 1, {}
    head = lines[0].split()
    validity, nextuid = None, 1
    try:
        if head[0] == "1" and len(head) >= 3:
            validity, nextuid = int(head[1]), int(head[2])
        elif head[0] in ("2", "3"):
            for field in head[1:]:
                if field[:1] == "V":
                    validity = int(field[1:])
                elif field[:1] == "N":
                    nextuid = int(field[1:])
        else:
            return None, 1, {}
    except (ValueError, IndexError):
        return None, 1, {}
    uids: dict[str, int] = {}
    for line in lines[1:]:
        left, sep, name = line.partition(" :")
        if not sep:  # format 1: "uid name"
            left, _, name = line.partition(" ")
        try:
            uid = int(left.split()[0])
        except (ValueError, IndexError):
            continue
        if name and uid > 0:
            uids[base_name(name.strip())] = uid
    if uids:
        nextuid = max(nextuid, max(uids.values()) + 1)
    return (validity if validity and validity > 0 else None), max(nextuid, 1), uids


def read_dovecot_keywords(folder: Path) -> dict[str, str]:
    """``dovecot-keywords`` (``0 $Label1``...) → keyword → file-name letter."""
    out: dict[str, str] = {}
    try:
        text = (folder / "dovecot-keywords").read_text("utf-8", "replace")
    except OSError:
        return out
    for line in text.splitlines():
        num, _, keyword = line.partition(" ")
        if num.isdigit() and int(num) < len(KEYWORD_LETTERS) and keyword.strip():
            out[keyword.strip()] = KEYWORD_LETTERS[int(num)]
    return out


def read_dovecot_subscriptions(root: Path) -> list[str]:
    """Dovecot's ``subscriptions`` file (``V\t2``, a blank line, one name per
    line with TAB between hierarchy levels) → names with our delimiter."""
    try:
        lines = (root / "subscriptions").read_text("utf-8", "replace").splitlines()
    except OSError:
        return []
    names = []
    for line in lines:
        if not line or line.startswith("V\t"):
            continue
        names.append(normalize_name(line.replace("\t", DELIMITER)))
    return names
