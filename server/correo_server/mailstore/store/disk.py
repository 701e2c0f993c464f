"""The disk side of one folder: its Maildir files and its SQLite index.

A :class:`FolderDisk` is used only from the store's worker threads, one at a
time (its mailbox's lock), and never touches the in-memory view: each method
takes what it needs as arguments and returns what it did, for the
:class:`~.folder.Folder` to apply on the event loop (see :mod:`.threads`).
It owns what only the disk needs — the index handle, the keyword letters in
file names — and the counters the index holds (UIDNEXT, HIGHESTMODSEQ),
which it advances as it commits.

Crash safety: a message is written to ``tmp/``, fsynced, renamed into
``new/`` or ``cur/`` and the directory fsynced before its index row commits
(:meth:`FolderDisk.commit_new`), with its delivery keys (which its file
name also carries, for a crash in between: :mod:`.repair`); an expunge unlinks before the rows go; a
move renames straight into the other folder.  After a power loss the last
flag changes or expunges may be undone (the index is WAL with
``synchronous=NORMAL``, as Dovecot's default ``mail_fsync=optimized``), never
a message.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterable

from ... import faults
from ...deliverykeys import RETENTION_SECONDS
from .. import maildir
from ..index import Index, Row
from .errors import MessageGone
from .values import MessageInfo

PRUNE_EVERY_SECONDS = 3600.0  # how often a folder drops delivery keys past their retention

Staged = tuple[Path, int, float, int, frozenset[str], bool]
"""A message file ready to commit: (path in ``tmp/`` — or already in place,
for a move —, size, internal date, zone offset, flags, stored with bare LF)."""


def locate(folder: Path, msg: MessageInfo) -> str:
    """Where a message's file is now (relative to the folder), when it was
    renamed (flags) or moved (new→cur) since the view was made."""
    found = maildir.scan(folder).get(msg.base)
    if found is None:
        raise MessageGone(f"message UID {msg.uid} no longer exists")
    return found


def read_message(folder: Path, msg: MessageInfo) -> tuple[bytes, str | None]:
    """The message's bytes (bare LF served as CRLF), and its file's new place
    when it had moved (else None).  Needs no lock: a file renamed meanwhile
    is found again by its base name."""
    moved = None
    try:
        data = (folder / msg.path).read_bytes()
    except FileNotFoundError:
        moved = locate(folder, msg)
        data = (folder / moved).read_bytes()
    return (data.replace(b"\n", b"\r\n") if msg.lf else data), moved


class FolderDisk:
    def __init__(self, path: Path, index: Index, keyword_letters: dict[str, str], *,
                 uidnext: int, highestmodseq: int) -> None:
        self.path = path
        self.index = index
        self.kw = keyword_letters  # keyword -> file-name letter
        self.uidnext = uidnext
        self.highestmodseq = highestmodseq
        self._keys_pruned = 0.0  # when delivery keys past their retention were last dropped

    # -- file names ----------------------------------------------------------
    def final_rel(self, base: str, flags: frozenset[str]) -> str:
        """Where a new message file goes: ``new/`` without flags (Maildir's
        unseen mail), ``cur/`` with its ``:2,`` info otherwise."""
        return ("cur/" + base + maildir.info_for(flags, self.kw)) if flags else "new/" + base

    def ensure_keywords(self, flags: Iterable[str]) -> None:
        """Give new keywords a file-name letter (while letters last) and write
        Dovecot's ``dovecot-keywords`` so that it reads them the same way."""
        new = [f for f in flags if not f.startswith("\\") and f not in self.kw]
        if not new:
            return
        used = set(self.kw.values())
        free = [c for c in maildir.KEYWORD_LETTERS if c not in used]
        assigned = False
        with self.index.transaction():
            for kw in new:
                if not free:
                    break
                letter = free.pop(0)
                self.index.add_keyword(letter, kw)
                self.kw[kw] = letter
                assigned = True
        if assigned:
            lines = [f"{ord(letter) - ord('a')} {kw}" for kw, letter in sorted(self.kw.items(), key=lambda x: x[1])]
            try:
                maildir.write_atomic(self.path / "dovecot-keywords", "\n".join(lines) + "\n")
            except OSError:
                pass

    # -- writes --------------------------------------------------------------
    def _next_modseq(self) -> int:
        return self.highestmodseq + 1

    def commit_new(self, staged: list[Staged], *, first_recent: int, delivery: float | None = None,
                   inbox: bool = False, carried: list[dict[str, bytes]] | None = None,
                   keys: list[tuple[str, ...]] | None = None) -> list[MessageInfo]:
        """Rename files staged in ``tmp/`` into place, fsync, and commit their
        rows with new UIDs (one transaction); ``delivery`` (when a delivery
        to INBOX) is recorded as the mailbox's last delivery; ``carried``
        (per staged message: the values derived from it, kind → bytes) go
        with them (a copy keeps the original's); ``keys`` (per staged
        message: its delivery keys) are committed with the rows."""
        if not staged:
            return []
        uid = self.uidnext
        modseq = self._next_modseq()
        made: list[MessageInfo] = []
        for tmp, size, idate, tz, flags, lf in staged:
            if tmp.parent.name == "tmp":
                rel = self.final_rel(tmp.name, flags)
                os.rename(tmp, self.path / rel)
            else:  # already placed (MOVE)
                rel = f"{tmp.parent.name}/{tmp.name}"
            made.append(MessageInfo(uid, size, idate, tz, flags, modseq, rel, maildir.base_name(tmp.name), lf))
            uid += 1
        maildir.fsync_dir(self.path / "new")
        if any(m.path.startswith("cur/") for m in made):
            maildir.fsync_dir(self.path / "cur")
        if keys:
            faults.point("mailstore.store.renamed")
        with self.index.transaction():
            for m in made:
                self.index.insert(Row(m.uid, m.base, m.path, m.size, m.internaldate, m.tzoffset, m.flags, m.modseq,
                                      m.lf))
            if carried:
                for m, values in zip(made, carried):
                    for kind, value in values.items():
                        self.index.put_message_data(kind, {m.uid: value})
            self.index.set_meta("uidnext", uid)
            self.index.set_meta("highestmodseq", modseq)
            self.index.set_meta("first_recent", first_recent)
            if delivery is not None and inbox:
                self.index.set_meta("last_delivery", float(delivery))
            if keys:
                when = float(delivery) if delivery is not None else time.time()
                self.index.record_deliveries([(k, m.uid, when) for m, ks in zip(made, keys) for k in ks])
                if when - self._keys_pruned > PRUNE_EVERY_SECONDS:
                    self.index.forget_deliveries(when - RETENTION_SECONDS)
                    self._keys_pruned = when
        self.uidnext = uid
        self.highestmodseq = modseq
        return made

    def set_flags(self, changes: list[tuple[MessageInfo, frozenset[str]]]) -> list[MessageInfo]:
        """Give each message its new flags (one new MODSEQ for all); the
        files are renamed to follow (the index is the authority)."""
        if not changes:
            return []
        self.ensure_keywords(frozenset().union(*(new for _, new in changes)))
        modseq = self._next_modseq()
        updated, renames = [], []
        with self.index.transaction():
            for msg, new in changes:
                path = "cur/" + msg.base + maildir.info_for(new, self.kw)
                self.index.update(msg.uid, flags=new, modseq=modseq, path=path)
                updated.append(MessageInfo(msg.uid, msg.size, msg.internaldate, msg.tzoffset, new, modseq, path,
                                           msg.base, msg.lf))
                if path != msg.path:
                    renames.append((msg.path, path))
            self.index.set_meta("highestmodseq", modseq)
        self.highestmodseq = modseq
        for old, new in renames:
            try:
                os.rename(self.path / old, self.path / new)
            except FileNotFoundError:
                pass
        return updated

    def expunge(self, victims: list[MessageInfo]) -> list[int]:
        """Remove these messages: files first, then rows, so a crash in
        between only leaves rows without files (expunged again on open).  No
        fsync: after a power loss an expunge may be undone."""
        if not victims:
            return []
        for msg in victims:
            try:
                os.unlink(self.path / msg.path)
            except FileNotFoundError:
                found = maildir.scan(self.path).get(msg.base)
                if found:
                    os.unlink(self.path / found)
        self.drop_rows([m.uid for m in victims])
        return [m.uid for m in victims]

    def drop_rows(self, uids: list[int]) -> None:
        modseq = self._next_modseq()
        with self.index.transaction():
            self.index.delete(uids, modseq)
            self.index.set_meta("highestmodseq", modseq)
        self.highestmodseq = modseq

    def set_subscribed(self, names: Iterable[str], on: bool) -> None:
        """Subscriptions live in INBOX's index."""
        with self.index.transaction():
            for name in names:
                (self.index.subscribe if on else self.index.unsubscribe)(name)

    def close(self, first_recent: int) -> None:
        try:
            with self.index.transaction():
                self.index.set_meta("first_recent", first_recent)
        except Exception:
            pass
        self.index.close()
