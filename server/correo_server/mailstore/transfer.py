"""Moving one mailbox between mailstore shards: the files.  Synchronous
(the side port, :mod:`.moveport`, runs it on worker threads); the
decisions of a move are the operator's (``correo_operator.moves``).

A mailbox is one directory under the data folder (:mod:`.store`): its
Maildir folders, the SQLite index beside each (UIDs, UIDVALIDITY,
MODSEQs, flags, the delivery keys, and in INBOX's the subscriptions), the
UIDVALIDITY counter, the Sieve scripts (``correo-sieve/``).  A move copies
that directory as it is, so a client's cache stays valid: same
UIDVALIDITY, same UIDs, same MODSEQs.

The source side, in order:

1. :func:`fence` writes ``correo-move-out.json`` (the fence: target shard,
   a fence id, since when) and the store stops writing the mailbox
   (``Store.fenced``); the marker survives a crash of the shard.
2. :func:`export` writes a tar stream of the directory (markers left
   out) whose last member, ``correo-move-manifest.json``, lists every file
   with its size and SHA-256 and the mailbox's :func:`summary` (per folder:
   UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, messages, octets, a digest of the
   index rows; subscriptions; Sieve scripts).
3. After the directory names the new owner and a grace period,
   :func:`remove` deletes the old copy (renamed aside first: never half a
   mailbox).  :func:`unfence` ends a move called off before the flip.

The target side: :func:`import_stream` unpacks into a staging directory
(``.correo-move-in-<address>``, never a mailbox name: those never start
with a dot), checks every file against the manifest and the summary of
what it unpacked against the source's, writes ``correo-move-in.json``
(from, fence id, digest, when) and only then renames it into place; a
crash leaves either the staging directory (removed by the next import)
or the whole verified copy.  :func:`settle` drops the marker once the old
copy is gone.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..osutil import fsync_dir
from . import maildir
from .index import INDEX_FILE
from .store.mailbox import TRASH_DIR, address_dir

OUT_MARKER = "correo-move-out.json"  # on the source: fenced for a move
IN_MARKER = "correo-move-in.json"  # on the target: a verified copy, until the old one is removed
MANIFEST = "correo-move-manifest.json"  # the export's last member
STAGING = ".correo-move-in-"  # + address dir: an import being unpacked
DISCARDED = ".correo-move-gone-"  # + unique: a copy being removed
SIEVE_DIR = "correo-sieve"
_SKIP_SUFFIXES = ("-shm",)  # SQLite's shared-memory file: rebuilt on open, never copied
CHUNK = 256 * 1024


class TransferError(Exception):
    """The copy is unusable (truncated stream, checksum or summary mismatch,
    an unsafe member): nothing was put in place."""


class TargetHoldsMail(TransferError):
    """The target has a mailbox folder no move made: never overwritten."""


@dataclass(frozen=True)
class Imported:
    address: str
    digest: str
    summary: dict
    files: int
    bytes: int


# -- markers -------------------------------------------------------------------------
def mailbox_root(data_dir: Path, address: str) -> Path:
    return Path(data_dir) / address_dir(address)


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, path)
    fsync_dir(path.parent)


def read_marker(root: Path, name: str) -> dict | None:
    try:
        doc = json.loads((root / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def markers(data_dir: Path, name: str) -> dict[str, dict]:
    """Address → marker, for every mailbox of ``data_dir`` that has ``name``."""
    out: dict[str, dict] = {}
    try:
        entries = os.listdir(data_dir)
    except FileNotFoundError:
        return out
    for entry in entries:
        if entry.startswith("."):
            continue
        doc = read_marker(Path(data_dir) / entry, name)
        if doc is not None and isinstance(doc.get("address"), str):
            out[doc["address"].lower()] = doc
    return out


def fence(data_dir: Path, address: str, to: int, now: float | None = None) -> dict:
    """Fence ``address`` for a move to shard ``to`` (idempotent: an existing
    fence keeps its id, so a copy made under it stays valid)."""
    root = mailbox_root(data_dir, address)
    old = read_marker(root, OUT_MARKER)
    if old is not None:
        if old.get("to") != to:
            old = {**old, "to": to}
            _write_json(root / OUT_MARKER, old)
        return old
    root.mkdir(parents=True, exist_ok=True)
    doc = {"address": address.lower(), "to": to, "fence": uuid.uuid4().hex,
           "since": time.time() if now is None else now}
    _write_json(root / OUT_MARKER, doc)
    fsync_dir(Path(data_dir))
    return doc


def unfence(data_dir: Path, address: str) -> bool:
    """Lift the source's fence (False when there was none)."""
    return _drop_marker(data_dir, address, OUT_MARKER)


def settle(data_dir: Path, address: str) -> bool:
    """Forget the target's copy marker once the move is over."""
    return _drop_marker(data_dir, address, IN_MARKER)


def _drop_marker(data_dir: Path, address: str, marker: str) -> bool:
    root = mailbox_root(data_dir, address)
    try:
        os.unlink(root / marker)
    except FileNotFoundError:
        return False
    fsync_dir(root)
    return True


def remove(data_dir: Path, address: str) -> bool:
    """Delete a mailbox's directory: renamed aside (one step), then removed."""
    root = mailbox_root(data_dir, address)
    if not root.exists():
        return False
    aside = Path(data_dir) / f"{DISCARDED}{uuid.uuid4().hex}"
    os.rename(root, aside)
    fsync_dir(Path(data_dir))
    shutil.rmtree(aside, ignore_errors=True)
    return True


def sweep(data_dir: Path) -> None:
    """At start: remove what an import or a removal cut off left behind."""
    try:
        entries = os.listdir(data_dir)
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.startswith((STAGING, DISCARDED)):
            shutil.rmtree(Path(data_dir) / entry, ignore_errors=True)


# -- what a mailbox holds ---------------------------------------------------------------
def _folders(root: Path) -> list[tuple[str, Path]]:
    out = []
    if (root / "cur").is_dir():
        out.append(("INBOX", root))
    try:
        entries = sorted(os.listdir(root))
    except FileNotFoundError:
        return out
    for entry in entries:
        name = maildir.name_for(entry)
        if name is not None and name != "INBOX" and (root / entry / "cur").is_dir():
            out.append((name, root / entry))
    return out


def summary(root: Path) -> dict:
    """What a client and the operator would compare: per folder UIDVALIDITY,
    UIDNEXT, HIGHESTMODSEQ, message count, octets and a digest of the index
    rows (UID, file, size, flags, MODSEQ); the subscriptions; the Sieve
    scripts' digests; totals."""
    folders: dict[str, dict] = {}
    subscriptions: list[str] = []
    for name, path in _folders(root):
        index = path / INDEX_FILE
        if not index.exists():
            folders[name] = {"indexed": False}
            continue
        db = sqlite3.connect(index, timeout=30)
        try:
            meta = dict(db.execute("SELECT key, value FROM meta WHERE key IN "
                                   "('uidvalidity', 'uidnext', 'highestmodseq')").fetchall())
            digest = hashlib.sha256()
            count = size = 0
            for uid, base, rsize, flags, modseq in db.execute(
                    "SELECT uid, base, size, flags, modseq FROM messages ORDER BY uid"):
                digest.update(f"{uid}\0{base}\0{rsize}\0{flags}\0{modseq}\n".encode("utf-8", "surrogateescape"))
                count += 1
                size += rsize
            if name == "INBOX":
                subscriptions = sorted(r[0] for r in db.execute("SELECT name FROM subscriptions"))
        finally:
            db.close()
        folders[name] = {"uidvalidity": int(meta.get("uidvalidity") or 0), "uidnext": int(meta.get("uidnext") or 0),
                         "highestmodseq": int(meta.get("highestmodseq") or 0), "messages": count, "bytes": size,
                         "rows": digest.hexdigest()}
    sieve = {}
    sieve_root = root / SIEVE_DIR
    if sieve_root.is_dir():
        for path in sorted(sieve_root.rglob("*")):
            if path.is_file():
                sieve[str(path.relative_to(sieve_root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"folders": folders, "subscriptions": subscriptions, "sieve": sieve,
            "messages": sum(f.get("messages", 0) for f in folders.values()),
            "bytes": sum(f.get("bytes", 0) for f in folders.values())}


def _files(root: Path) -> list[str]:
    """The files an export carries, relative to the mailbox directory, sorted:
    everything but the move markers, ``tmp/`` (unfinished writes), deleted
    folders on their way out, and SQLite's shared-memory files."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        parts = [] if rel_dir == "." else rel_dir.split(os.sep)
        dirnames[:] = sorted(d for d in dirnames if d != "tmp" and not (not parts and d == TRASH_DIR))
        for name in sorted(filenames):
            if not parts and name in (OUT_MARKER, IN_MARKER):
                continue
            if name.endswith(_SKIP_SUFFIXES) or name.startswith(".correo-move"):
                continue
            out.append("/".join([*parts, name]))
    return sorted(out)


def _dirs(root: Path) -> list[str]:
    """The directories to make on the other side (empty folders, ``tmp/``)."""
    out = []
    for dirpath, dirnames, _ in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        parts = [] if rel_dir == "." else rel_dir.split(os.sep)
        if parts and (parts[0] == TRASH_DIR):
            dirnames[:] = []
            continue
        for d in sorted(dirnames):
            if not parts and d == TRASH_DIR:
                continue
            out.append("/".join([*parts, d]))
    return sorted(out)


def digest_of(manifest: dict) -> str:
    return hashlib.sha256(json.dumps({"files": manifest["files"], "summary": manifest["summary"]},
                                     sort_keys=True).encode()).hexdigest()


# -- export --------------------------------------------------------------------------------
class _Hashing(io.RawIOBase):
    def __init__(self, fh: BinaryIO) -> None:
        self.fh, self.sha, self.size = fh, hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data


def export(data_dir: Path, address: str, out: BinaryIO, *, fence_id: str) -> dict:
    """Write the mailbox as a tar stream to ``out`` (only while fenced: its
    files do not change); returns the manifest (also the stream's last
    member)."""
    root = mailbox_root(data_dir, address)
    marker = read_marker(root, OUT_MARKER)
    if marker is None or marker.get("fence") != fence_id:
        raise TransferError(f"{address} is not fenced with {fence_id} here")
    files: dict[str, list] = {}
    doc_summary = summary(root)
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for rel in _dirs(root):
            info = tarfile.TarInfo(rel)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o700, int(time.time())
            tar.addfile(info)
        for rel in _files(root):
            path = root / rel
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                info = tarfile.TarInfo(rel)
                info.size, info.mode, info.mtime = st.st_size, 0o600, st.st_mtime
                hashing = _Hashing(fh)
                tar.addfile(info, hashing)
                if hashing.size != st.st_size:
                    raise TransferError(f"{rel} changed while it was copied")
            files[rel] = [st.st_size, hashing.sha.hexdigest(), st.st_mtime]
        manifest = {"address": address.lower(), "fence": fence_id, "files": files, "summary": doc_summary}
        manifest["digest"] = digest_of(manifest)
        data = json.dumps(manifest, sort_keys=True).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
        tar.addfile(info, io.BytesIO(data))
    return manifest


# -- import ---------------------------------------------------------------------------------
def _safe(name: str) -> str:
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in name or "\0" in name:
        raise TransferError(f"unsafe path in the stream: {name!r}")
    return name


def held_elsewhere(data_dir: Path, address: str) -> str | None:
    """Why an import of ``address`` here would be refused before it starts:
    a mailbox folder no move put here (None: an import may come)."""
    held = mailbox_root(data_dir, address)
    if held.exists() and read_marker(held, OUT_MARKER) is None and read_marker(held, IN_MARKER) is None:
        return (f"this shard already holds mail for {address.lower()} that no move put here (an earlier "
                f"placement left it in {held}); it is not overwritten: move that folder aside, or pin the "
                "mailbox back")
    return None


def import_stream(data_dir: Path, address: str, stream: BinaryIO, *, source: int, fence_id: str,
                  now: float | None = None) -> Imported:
    """Unpack, verify and put in place the copy in ``stream`` (the caller has
    checked that this shard does not own the mailbox).  Raises
    :class:`TransferError` and leaves nothing in place when anything is off."""
    data_dir = Path(data_dir)
    name = address_dir(address)
    staging = data_dir / f"{STAGING}{name}"
    refusal = held_elsewhere(data_dir, address)
    if refusal is not None:
        raise TargetHoldsMail(refusal)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        seen: dict[str, list] = {}
        manifest = None
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    rel = _safe(member.name)
                    if rel == MANIFEST:
                        reader = tar.extractfile(member)
                        manifest = json.loads(reader.read()) if reader is not None else None
                        continue
                    target = staging / rel
                    if member.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    if not member.isfile():
                        raise TransferError(f"not a file or a directory: {rel!r}")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    reader = tar.extractfile(member)
                    sha, size = hashlib.sha256(), 0
                    with open(target, "wb") as fh:
                        while reader is not None and (chunk := reader.read(CHUNK)):
                            sha.update(chunk)
                            size += len(chunk)
                            fh.write(chunk)
                        fh.flush()
                        os.fsync(fh.fileno())
                    os.utime(target, (member.mtime, member.mtime))
                    seen[rel] = [size, sha.hexdigest()]
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            raise TransferError(f"the stream broke off or is not a mailbox export: {exc}") from exc
        if manifest is None:
            raise TransferError("the stream ended before its manifest: the copy is incomplete")
        if manifest.get("address") != address.lower() or manifest.get("fence") != fence_id:
            raise TransferError(f"the stream is of {manifest.get('address')} fence {manifest.get('fence')}, "
                                f"not {address.lower()} fence {fence_id}")
        expected = {rel: v[:2] for rel, v in manifest["files"].items()}
        if seen != expected:
            bad = sorted(set(seen) ^ set(expected)) or sorted(r for r in seen if seen[r] != expected.get(r))
            raise TransferError(f"{len(bad)} file(s) differ from the manifest (first {bad[0]!r})")
        if digest_of(manifest) != manifest.get("digest"):
            raise TransferError("the manifest's digest does not match its contents")
        for dirpath, _, _ in os.walk(staging):
            fsync_dir(Path(dirpath))
        got = summary(staging)
        if got != manifest["summary"]:
            raise TransferError(f"the copy's summary differs from the source's: {got} != {manifest['summary']}")
        doc = {"address": address.lower(), "from": source, "fence": fence_id, "digest": manifest["digest"],
               "at": time.time() if now is None else now, "messages": got["messages"], "bytes": got["bytes"]}
        _write_json(staging / IN_MARKER, doc)
        final = data_dir / name
        if final.exists():  # a copy an earlier move left (never the owner's: the caller checked)
            remove(data_dir, address)
        os.rename(staging, final)
        fsync_dir(data_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Imported(address.lower(), manifest["digest"], got, len(seen), sum(v[0] for v in seen.values()))
