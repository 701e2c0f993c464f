"""Opening a folder: its index, taken over from Dovecot or rebuilt when it
must be, and made to agree with the files.

:func:`open_folder` runs in a worker thread under the mailbox lock and
returns an :class:`Opened` — the folder's :class:`~.disk.FolderDisk` and
everything its view needs — which :class:`~.folder.Folder` applies on the
event loop (:mod:`.threads`).

- A corrupt index is moved aside (``correo-index.sqlite.corrupt-<time>``)
  and rebuilt from the files, with a new UIDVALIDITY.
- A folder Dovecot kept is taken over with its UIDs, UIDVALIDITY and
  keyword letters (``dovecot-uidlist``, ``dovecot-keywords``) the first time
  correo indexes it: clients keep their caches, and POP3 UIDLs stay.
- Repair (:func:`reconcile`): ``tmp/`` is emptied; a file without a row gets
  a new UID (in the order of the files' times), with the delivery keys its
  name carries (a delivery cut off between the file's rename and its index
  commit is still known when the queue repeats it), a row without a file is
  expunged, a row whose file was renamed follows it.  Files without CR are
  served with CRLF (Dovecot and most MDAs store bare LF) and sized so.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ... import logs
from .. import maildir
from ..index import INDEX_FILE, Index, IndexCorrupt, Row
from .disk import FolderDisk
from .errors import NoSuchFolder
from .uidvalidity import UidValidityCounter
from .values import MessageInfo, local_offset_minutes

log = logs.get(__name__)


@dataclass
class Opened:
    """What opening found, for the view."""

    disk: FolderDisk
    uidvalidity: int
    first_recent: int
    messages: list[MessageInfo]  # UID order
    created_index: bool  # no index was on disk (new folder, or taken over)
    ext: dict[str, str] = field(default_factory=dict)  # the ext.* values extensions keep (MAILBOXID, a special use)


def open_index(path: Path, folder: str) -> Index:
    index_path = path / INDEX_FILE
    try:
        return Index(index_path)
    except IndexCorrupt as exc:
        log.error("index_corrupt_rebuilding", folder=folder, error=str(exc))
        aside = index_path.with_name(f"{INDEX_FILE}.corrupt-{int(time.time())}")
        for suffix in ("", "-wal", "-shm"):
            p = Path(str(index_path) + suffix)
            if p.exists():
                os.replace(p, Path(str(aside) + suffix))
        return Index(index_path)


def open_folder(path: Path, *, name: str, address: str, create: bool,
                uidvalidity: UidValidityCounter) -> Opened:
    """Open (creating when ``create``) and repair the folder at ``path``."""
    if not (path / "cur").is_dir():
        if not create:
            raise NoSuchFolder(f"no folder {name}")
        maildir.make_folder(path, subfolder=name != "INBOX")
    idx = open_index(path, name)
    created = False
    preset: dict[str, int] = {}
    if idx.get_meta("uidvalidity") is None:
        # A new index.  If Dovecot kept this folder, take over its UIDs,
        # UIDVALIDITY and keyword letters: clients keep their caches, and
        # POP3 UIDLs (which derive from them) stay what they were.
        validity, nextuid, preset = maildir.read_dovecot_uidlist(path)
        keywords = maildir.read_dovecot_keywords(path)
        with idx.transaction():
            if validity is not None:
                uidvalidity.note(validity)
            idx.set_meta("uidvalidity", validity or uidvalidity.allocate())
            idx.set_meta("uidnext", nextuid)
            idx.set_meta("highestmodseq", 1)
            idx.set_meta("first_recent", nextuid)
            for keyword, letter in keywords.items():
                idx.add_keyword(letter, keyword)
        created = True
        if validity is not None:
            log.info("dovecot_uids_taken_over", mailbox=address, folder=name,
                     uidvalidity=validity, messages=len(preset))
    disk = FolderDisk(path, idx, idx.keywords(), uidnext=int(idx.get_meta("uidnext")),
                      highestmodseq=int(idx.get_meta("highestmodseq")))
    rows = reconcile(disk, idx.rows(), preset, address=address, folder=name)
    messages = [MessageInfo(r.uid, r.size, r.internaldate, r.tzoffset, r.flags, r.modseq, r.path, r.base, r.lf)
                for r in sorted(rows, key=lambda r: r.uid)]
    return Opened(disk, int(idx.get_meta("uidvalidity")), int(idx.get_meta("first_recent", 1)), messages, created,
                  idx.ext_meta())


def reconcile(disk: FolderDisk, rows: list[Row], preset: dict[str, int] | None = None, *,
              address: str = "", folder: str = "") -> list[Row]:
    """Make the index agree with the files (after a crash, or when another
    program changed the Maildir); returns the rows as they now are."""
    path, idx = disk.path, disk.index
    maildir.clean_tmp(path)
    files = maildir.scan(path)
    known = {r.base for r in rows}
    missing = [r for r in rows if r.base not in files]
    moved = [(r, files[r.base]) for r in rows if r.base in files and files[r.base] != r.path]
    extra = [base for base in files if base not in known]
    if not (missing or moved or extra):
        return rows
    letters = {v: k for k, v in disk.kw.items()}
    infos = []
    for base in extra:
        rel = files[base]
        try:
            data = (path / rel).read_bytes()
            mtime = os.stat(path / rel).st_mtime
        except FileNotFoundError:
            continue
        # Dovecot and most MDAs store LF line ends and convert when serving;
        # such a file (no CR at all) is served with CRLF, and sized so.
        lf = b"\r" not in data and b"\n" in data
        size = len(data) + data.count(b"\n") if lf else len(data)
        infos.append((mtime, base, rel, size, lf))
    infos.sort()
    preset = preset or {}
    taken = {r.uid for r in rows}
    uid = max([disk.uidnext, *(u + 1 for u in preset.values())])
    modseq = disk.highestmodseq + 1
    added = []
    with idx.transaction():
        idx.delete([r.uid for r in missing], modseq)
        for r, rel in moved:
            idx.set_path(r.uid, rel)
            r.path = rel
        for mtime, base, rel, size, lf in infos:
            known_uid = preset.get(base)
            if known_uid is not None and known_uid not in taken:
                this = known_uid
            else:
                this, uid = uid, uid + 1
            taken.add(this)
            row = Row(this, base, rel, size, mtime, local_offset_minutes(mtime),
                      maildir.flags_from_name(rel, letters), modseq, lf)
            idx.insert(row)
            added.append(row)
            keys = maildir.keys_from_name(rel)
            if keys:
                idx.record_deliveries([(k, this, mtime) for k in keys])
        idx.set_meta("uidnext", uid)
        idx.set_meta("highestmodseq", modseq)
    disk.uidnext, disk.highestmodseq = uid, modseq
    gone = {r.uid for r in missing}
    log.info("folder_repaired", mailbox=address, folder=folder,
             expunged=len(missing), added=len(added), renamed=len(moved))
    return [r for r in rows if r.uid not in gone] + added
