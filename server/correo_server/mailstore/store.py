"""The mailstore's storage API: mailboxes, folders and messages.

Used by LMTP (``deliver``), POP3 and IMAP.  One :class:`Store` per process
serves ``cfg.mailstore.data_dir``; under it each mailbox (one directory entry)
is a Maildir (:mod:`.maildir`) with a SQLite index beside each folder
(:mod:`.index`).  Change notification between sessions is :mod:`.changes`.

Quick reference (everything that touches the disk is ``async`` and runs its
blocking work on the store's own few threads, :meth:`Store.io`)::

    store = Store.from_config(cfg, directory)          # directory: Reloading[Directory] or Directory
    uid = await store.deliver("alice@example.com", data)   # QuotaExceeded / DiskFull
    usage = await store.usage("alice@example.com")     # Usage(messages, bytes), all folders
    store.last_delivery("alice@example.com")           # float | None (epoch seconds)

    mbox = await store.mailbox("alice@example.com")    # created on first use (INBOX, Sent, Drafts, Trash, Junk)
    inbox = await mbox.folder("INBOX")                 # NoSuchFolder
    inbox.uidvalidity, inbox.uidnext, inbox.highestmodseq
    for msg in inbox.messages():                       # MessageInfo(uid, size, flags, ...), UID order
        data = await inbox.read(msg.uid)               # MessageGone if expunged meanwhile
    await inbox.store([3], ["\\Seen"], "add", origin=session)
    await inbox.expunge([3, 4], origin=session)        # remove these UIDs (POP3 UPDATE state)
    watcher = inbox.watch(session)                     # changes made by others; see .changes
    mbox.try_lock("pop3", session) / mbox.unlock("pop3", session)

POP3's UIDL derives from ``folder.uidvalidity`` and the UID: stable across
sessions and restarts, and the same UID IMAP shows.

Consistency: every write to one mailbox (any folder) runs under that
mailbox's lock, so IMAP, POP3 and LMTP sessions on the same mailbox see one
order of events.  Threads only touch the disk and the index; each folder's
in-memory view changes on the event loop, right after the thread's work,
even when the task that asked was cancelled meanwhile (the lock is held
until then).

Crash safety: a message is written to ``tmp/``, fsynced, renamed into
``new/`` or ``cur/`` and the directory fsynced before its index row commits;
an expunge unlinks before the rows go; a move renames straight into the
other folder.  Opening a folder repairs the index from the files: a file
without a row gets a new UID, a row without a file is expunged, ``tmp/`` is
emptied.  Durability: new mail is on disk before it is acknowledged; the
index survives any process crash, and after a power loss may lose its last
flag changes or expunges (Dovecot's default ``mail_fsync=optimized`` makes
the same trade).

Migration: a Maildir Dovecot kept is taken over with its UIDs, UIDVALIDITY,
keyword letters and subscriptions (``dovecot-uidlist``, ``dovecot-keywords``,
``subscriptions``) the first time correo indexes it, and messages stored with
bare LF line ends are served with CRLF, as Dovecot serves them.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from .. import logs
from . import maildir
from .changes import Hub, Watcher
from .index import INDEX_FILE, Index, IndexCorrupt, Row

log = logs.get(__name__)

SPECIAL_USE = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash", "Junk": "\\Junk"}
DEFAULT_FOLDERS = ("Sent", "Drafts", "Trash", "Junk")
UIDVALIDITY_FILE = "correo-uidvalidity"  # the last UIDVALIDITY given out in this mailbox
TRASH_DIR = "correo-trash"  # deleted folders go here before removal (Dovecot ignores it)
_SYNC_READ_LIMIT = 256 * 1024  # smaller files are read on the event loop (page cache)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

class StoreError(Exception):
    """Base of the store's errors; ``str()`` is a message fit for a client."""


class QuotaExceeded(StoreError):
    """The message would take the mailbox over its quota (LMTP 552 5.2.2 /
    452 4.2.2, IMAP ``NO [OVERQUOTA]``)."""

    def __init__(self, usage: int, quota: int, size: int) -> None:
        super().__init__(f"mailbox over quota ({usage} + {size} bytes > {quota})")
        self.usage, self.quota, self.size = usage, quota, size


class DiskFull(StoreError):
    """No room on the volume (LMTP 452 4.3.1, IMAP ``NO [SERVERBUG]``-free
    temporary failure)."""


class NoSuchFolder(StoreError):
    pass


class FolderExists(StoreError):
    pass


class FolderError(StoreError):
    """A folder operation that cannot be done (bad name, INBOX deletion...)."""


class MessageGone(StoreError):
    """The message was expunged (by another session) before it could be read."""


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Usage:
    messages: int = 0
    bytes: int = 0

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(self.messages + other.messages, self.bytes + other.bytes)


@dataclass(frozen=True)
class MessageInfo:
    uid: int
    size: int  # RFC822.SIZE: the exact bytes BODY[] returns
    internaldate: float  # epoch seconds
    tzoffset: int  # minutes east of UTC, for INTERNALDATE's zone
    flags: frozenset[str]  # system flags (\\Seen ...) and keywords; never \\Recent
    modseq: int
    path: str  # relative to the folder: new/<base> or cur/<base>:2,<letters>
    base: str
    lf: bool = False  # stored with bare LF line ends (taken over from Dovecot): served with CRLF


@dataclass(frozen=True)
class FolderEntry:
    """One name in the folder hierarchy as LIST shows it."""

    name: str
    selectable: bool  # False: only implied by a child (\\Noselect)
    special_use: str | None = None


def _local_offset_minutes(ts: float) -> int:
    return (time.localtime(ts).tm_gmtoff or 0) // 60


def _address_dir(address: str) -> str:
    name = address.strip().lower()
    if not name or name in (".", "..") or name.startswith("."):
        raise StoreError(f"not a usable mailbox address: {address!r}")
    return name.replace("%", "%25").replace("/", "%2F").replace("\x00", "%00")


async def _finish(fut: "asyncio.Future[Any]", apply: Callable[[Any], None] | None = None) -> Any:
    """Await a thread's future to its end even if we are cancelled meanwhile
    (the lock around it must not be released while the thread still works),
    then ``apply`` its result on the event loop — the only place the
    in-memory view changes — and re-raise the cancellation afterwards."""
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(fut)
            break
        except asyncio.CancelledError:
            if fut.done():
                if fut.cancelled():
                    raise
                result = fut.result()
                cancelled = True
                break
            cancelled = True
    if apply is not None:
        apply(result)
    if cancelled:
        raise asyncio.CancelledError
    return result


# ---------------------------------------------------------------------------
# Folder
# ---------------------------------------------------------------------------

class Folder:
    """One Maildir folder of a mailbox, with its index and in-memory view.

    Obtain with :meth:`Mailbox.folder`.  The view (:meth:`messages`,
    :meth:`get`) is always consistent with the last committed write.
    """

    def __init__(self, mailbox: "Mailbox", name: str) -> None:
        self.mailbox = mailbox
        self.name = name
        self.hub = Hub()
        self.deleted = False
        self.uidvalidity = 0
        self.uidnext = 1
        self.highestmodseq = 1
        self._first_recent = 1  # UIDs from here on are \\Recent for the next SELECT
        self._msgs: dict[int, MessageInfo] = {}
        self._uids: list[int] = []
        self._index: Index | None = None
        self._kw: dict[str, str] = {}  # keyword -> file-name letter
        self._keywords: set[str] = set()  # every keyword any message here has had
        self.created_index = False  # the index was made on this open (not found on disk)
        self.last_used = time.monotonic()

    # -- where -------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self.mailbox.root / maildir.dir_for(self.name)

    @property
    def special_use(self) -> str | None:
        return SPECIAL_USE.get(self.name)

    # -- the view ------------------------------------------------------------
    def messages(self) -> list[MessageInfo]:
        """Every message, in UID order (a snapshot)."""
        self.last_used = time.monotonic()
        return [self._msgs[u] for u in self._uids]

    def uids(self) -> list[int]:
        return list(self._uids)

    def get(self, uid: int) -> MessageInfo | None:
        return self._msgs.get(uid)

    def __len__(self) -> int:
        return len(self._uids)

    def usage(self) -> Usage:
        return Usage(len(self._uids), sum(m.size for m in self._msgs.values()))

    def count(self, pred: Callable[[MessageInfo], bool]) -> int:
        return sum(1 for m in self._msgs.values() if pred(m))

    def unseen(self) -> int:
        return self.count(lambda m: "\\Seen" not in m.flags)

    def recent_count(self) -> int:
        return sum(1 for u in self._uids if u >= self._first_recent)

    def take_recent(self) -> set[int]:
        """Claim the messages still \\Recent (RFC 3501: only one session sees a
        message as recent).  The caller (a read-write SELECT, or a selected
        session seeing new mail) shows them with \\Recent."""
        recent = {u for u in self._uids if u >= self._first_recent}
        self._first_recent = self.uidnext
        return recent

    def keywords(self) -> set[str]:
        """Keywords in use in this folder (for IMAP's FLAGS response)."""
        return set(self._keywords)

    def watch(self, owner: object) -> Watcher:
        """Subscribe ``owner`` (a session) to changes others make here."""
        return self.hub.watch(owner)

    # -- reading -------------------------------------------------------------
    def file_path(self, uid: int) -> Path:
        msg = self._msgs.get(uid)
        if msg is None:
            raise MessageGone(f"message UID {uid} no longer exists")
        return self.path / msg.path

    def _locate(self, msg: MessageInfo) -> Path:
        """Find a message whose file was renamed (flags) or moved (new→cur)
        since the view was made."""
        found = maildir.scan(self.path).get(msg.base)
        if found is None:
            raise MessageGone(f"message UID {msg.uid} no longer exists")
        current = self._msgs.get(msg.uid)
        if current is not None and current.path != found:
            self._set(replace(current, path=found))
        return self.path / found

    def _read_sync(self, msg: MessageInfo) -> bytes:
        try:
            data = (self.path / msg.path).read_bytes()
        except FileNotFoundError:
            data = self._locate(msg).read_bytes()
        return data.replace(b"\n", b"\r\n") if msg.lf else data

    async def read(self, uid: int) -> bytes:
        """The message's bytes exactly as stored (as delivered or appended)."""
        msg = self._msgs.get(uid)
        if msg is None:
            raise MessageGone(f"message UID {uid} no longer exists")
        self.last_used = time.monotonic()
        if msg.size <= _SYNC_READ_LIMIT:
            return self._read_sync(msg)
        return await self.mailbox.store.io(self._read_sync, msg)

    # -- writing (each under the mailbox lock, blocking parts in a thread) ----
    async def append(self, data: bytes, *, flags: Iterable[str] = (), internaldate: float | None = None,
                     tzoffset: int | None = None, quota_bytes: int | None = None,
                     delivery: bool = False) -> int:
        """Store a new message; returns its UID.  ``quota_bytes`` (None: the
        directory's quota for the mailbox, 0: no limit) is checked against the
        mailbox's usage in all folders.  Raises :class:`QuotaExceeded`,
        :class:`DiskFull`, :class:`NoSuchFolder` (folder deleted meanwhile)."""
        data = bytes(data)
        flags = frozenset(maildir.canonical_flag(f) for f in flags if f.lower() != "\\recent")
        now = self.mailbox.store.clock()
        idate = now if internaldate is None else internaldate
        tz = _local_offset_minutes(idate) if tzoffset is None else tzoffset

        def work() -> MessageInfo:
            self.mailbox._check_space(len(data), quota_bytes)
            self._ensure_keywords(flags)
            try:
                tmp = maildir.write_tmp(self.path, data, mtime=idate, now=now)
            except OSError as exc:
                raise (DiskFull(f"disk full: {exc.strerror}") if maildir.is_disk_full(exc) else exc) from exc
            return self._commit_new([(tmp, len(data), idate, tz, flags, False)], delivery=delivery and now)[0]

        async with self.mailbox.lock:
            self._check_alive()
            msg = await self._run(work, apply=lambda m: self._set(m))
        self.hub.publish("append", (msg.uid,))
        return msg.uid

    async def store(self, uids: Iterable[int], flags: Iterable[str], mode: str = "replace", *,
                    unchanged_since: int | None = None, origin: object = None
                    ) -> tuple[list[MessageInfo], list[int]]:
        """Change flags: ``mode`` is ``add``, ``remove`` or ``replace``.

        Returns (messages whose flags changed, now with their new MODSEQ;
        UIDs left alone because their MODSEQ is above ``unchanged_since``,
        RFC 7162).  Other watchers are told; ``origin`` (the session doing it)
        is not.
        """
        wanted = frozenset(maildir.canonical_flag(f) for f in flags if f.lower() != "\\recent")

        def work():
            changes: list[tuple[MessageInfo, frozenset[str]]] = []
            failed: list[int] = []
            for uid in uids:
                msg = self._msgs.get(uid)
                if msg is None:
                    continue
                if unchanged_since is not None and msg.modseq > unchanged_since:
                    failed.append(uid)
                    continue
                if mode == "add":
                    new = msg.flags | wanted
                elif mode == "remove":
                    new = msg.flags - wanted
                else:
                    new = wanted
                if new != msg.flags:
                    changes.append((msg, new))
            if not changes:
                return [], failed, []
            self._ensure_keywords(wanted)
            modseq = self.highestmodseq + 1
            updated, renames = [], []
            assert self._index is not None
            with self._index.transaction():
                for msg, new in changes:
                    path = "cur/" + msg.base + maildir.info_for(new, self._kw)
                    self._index.update(msg.uid, flags=new, modseq=modseq, path=path)
                    updated.append(replace(msg, flags=new, modseq=modseq, path=path))
                    if path != msg.path:
                        renames.append((msg.path, path))
                self._index.set_meta("highestmodseq", modseq)
            self.highestmodseq = modseq
            for old, new in renames:  # the index is the authority; names follow
                try:
                    os.rename(self.path / old, self.path / new)
                except FileNotFoundError:
                    pass
            return updated, failed, renames

        def apply(result) -> None:
            for msg in result[0]:
                self._set(msg)

        async with self.mailbox.lock:
            self._check_alive()
            updated, failed, _ = await self._run(work, apply=apply)
        if updated:
            self.hub.publish("flags", tuple(m.uid for m in updated), origin=origin)
        return updated, failed

    async def expunge(self, uids: Iterable[int], *, origin: object = None) -> list[int]:
        """Remove these messages for good; returns the UIDs removed (in order)."""
        async with self.mailbox.lock:
            self._check_alive()
            gone = await self._run(self._expunge_sync, sorted(set(uids)), apply=self._drop)
        if gone:
            self.hub.publish("expunge", tuple(gone), origin=origin)
        return gone

    def _expunge_sync(self, uids: list[int]) -> list[int]:
        victims = [self._msgs[u] for u in uids if u in self._msgs]
        if not victims:
            return []
        for msg in victims:
            try:
                os.unlink(self.path / msg.path)
            except FileNotFoundError:
                found = maildir.scan(self.path).get(msg.base)
                if found:
                    os.unlink(self.path / found)
        # Files go before rows, so a crash in between only leaves rows without
        # files (expunged again on open).  No fsync: after a power loss an
        # expunge may be undone, as with Dovecot's default mail_fsync.
        assert self._index is not None
        modseq = self.highestmodseq + 1
        with self._index.transaction():
            self._index.delete([m.uid for m in victims])
            self._index.set_meta("highestmodseq", modseq)
        self.highestmodseq = modseq
        return [m.uid for m in victims]

    async def copy(self, uids: Iterable[int], dest: "Folder", *, quota_bytes: int | None = None
                   ) -> list[tuple[int, int]]:
        """Copy messages (with their flags and internal dates) into ``dest`` of
        the same mailbox; returns (source UID, new UID) pairs."""
        if dest.mailbox is not self.mailbox:
            raise FolderError("copies between mailboxes are not supported")
        uids = [u for u in sorted(set(uids)) if u in self._msgs]

        def work():
            msgs = [self._msgs[u] for u in uids if u in self._msgs]
            self.mailbox._check_space(sum(m.size for m in msgs), quota_bytes)
            dest._ensure_keywords(frozenset().union(*(m.flags for m in msgs)) if msgs else frozenset())
            staged = []
            try:
                for msg in msgs:
                    src = self.path / msg.path
                    if not src.exists():
                        src = self._locate(msg)
                    tmp = maildir.link_tmp(dest.path, src, mtime=msg.internaldate)
                    staged.append((tmp, msg.size, msg.internaldate, msg.tzoffset, msg.flags, msg.lf))
            except OSError as exc:
                for item in staged:
                    item[0].unlink(missing_ok=True)
                raise (DiskFull(f"disk full: {exc.strerror}") if maildir.is_disk_full(exc) else exc) from exc
            new = dest._commit_new(staged)
            return [(m.uid, n.uid) for m, n in zip(msgs, new)], new

        async with self.mailbox.lock:
            self._check_alive()
            dest._check_alive()
            pairs, _ = await self._run(work, apply=lambda result: dest._apply_new(result[1]))
        if pairs:
            dest.hub.publish("append", tuple(p[1] for p in pairs))
        return pairs

    async def move(self, uids: Iterable[int], dest: "Folder", *, origin: object = None
                   ) -> list[tuple[int, int]]:
        """Move messages into ``dest`` (RFC 6851): renamed across, never copied,
        so a crash leaves each message in exactly one of the two folders (or,
        at worst, listed in both until the next repair).  Returns pairs."""
        if dest.mailbox is not self.mailbox:
            raise FolderError("moves between mailboxes are not supported")
        if dest is self:
            raise FolderError("source and destination are the same folder")
        uids = [u for u in sorted(set(uids)) if u in self._msgs]

        def work():
            msgs = [self._msgs[u] for u in uids if u in self._msgs]
            dest._ensure_keywords(frozenset().union(*(m.flags for m in msgs)) if msgs else frozenset())
            staged, moved = [], []
            for msg in msgs:
                # straight into place (never via tmp/, which a repair empties)
                src = self.path / msg.path
                target = dest.path / dest._final_rel(maildir.fresh_base(msg.base), msg.flags)
                try:
                    os.rename(src, target)
                except FileNotFoundError:
                    try:
                        os.rename(self._locate(msg), target)
                    except (MessageGone, FileNotFoundError):
                        continue
                staged.append((target, msg.size, msg.internaldate, msg.tzoffset, msg.flags, msg.lf))
                moved.append(msg)
            for sub in ("cur", "new"):
                maildir.fsync_dir(self.path / sub)
            new = dest._commit_new(staged)
            assert self._index is not None
            modseq = self.highestmodseq + 1
            with self._index.transaction():
                self._index.delete([m.uid for m in moved])
                self._index.set_meta("highestmodseq", modseq)
            self.highestmodseq = modseq
            return [(m.uid, n.uid) for m, n in zip(moved, new)], new

        def apply(result) -> None:
            pairs, new = result
            dest._apply_new(new)
            self._drop([src for src, _ in pairs])

        async with self.mailbox.lock:
            self._check_alive()
            dest._check_alive()
            pairs, _ = await self._run(work, apply=apply)
        if pairs:
            dest.hub.publish("append", tuple(p[1] for p in pairs))
            self.hub.publish("expunge", tuple(p[0] for p in pairs), origin=origin)
        return pairs

    # -- internals -------------------------------------------------------------
    def _check_alive(self) -> None:
        if self.deleted:
            raise NoSuchFolder(f"folder {self.name} was deleted")

    async def _run(self, fn, *args, apply: Callable[[Any], None] | None = None):
        """Run blocking work in a thread, to completion, then ``apply`` its
        result to the view on the event loop (the caller holds the lock)."""
        self.last_used = time.monotonic()
        if self._index is None:
            await _finish(asyncio.ensure_future(self.mailbox.store.io(self._open_sync, False)))
        return await _finish(asyncio.ensure_future(self.mailbox.store.io(fn, *args)), apply)

    def _set(self, msg: MessageInfo) -> None:
        old = self._msgs.get(msg.uid)
        self._msgs[msg.uid] = msg
        for flag in msg.flags:
            if not flag.startswith("\\"):
                self._keywords.add(flag)
        if old is None:
            self._uids.append(msg.uid)
            if len(self._uids) > 1 and self._uids[-2] > msg.uid:
                self._uids.sort()
            self.mailbox._usage_delta(self.name, 1, msg.size)
        elif old.size != msg.size:
            self.mailbox._usage_delta(self.name, 0, msg.size - old.size)

    def _drop(self, uids: list[int]) -> None:
        gone = set(uids)
        size = 0
        for uid in gone:
            msg = self._msgs.pop(uid, None)
            if msg is not None:
                size += msg.size
        self._uids = [u for u in self._uids if u not in gone]
        self.mailbox._usage_delta(self.name, -len(gone), -size)

    def _ensure_keywords(self, flags: Iterable[str]) -> None:
        """Give new keywords a file-name letter (while letters last) and write
        Dovecot's ``dovecot-keywords`` so that it reads them the same way."""
        new = [f for f in flags if not f.startswith("\\") and f not in self._kw]
        if not new:
            return
        used = set(self._kw.values())
        free = [c for c in maildir.KEYWORD_LETTERS if c not in used]
        assigned = False
        assert self._index is not None
        with self._index.transaction():
            for kw in new:
                if not free:
                    break
                letter = free.pop(0)
                self._index.add_keyword(letter, kw)
                self._kw[kw] = letter
                assigned = True
        if assigned:
            lines = [f"{ord(letter) - ord('a')} {kw}" for kw, letter in sorted(self._kw.items(), key=lambda x: x[1])]
            try:
                maildir.write_atomic(self.path / "dovecot-keywords", "\n".join(lines) + "\n")
            except OSError:
                pass

    def _final_rel(self, base: str, flags: frozenset[str]) -> str:
        """Where a new message file goes: ``new/`` without flags (Maildir's
        unseen mail), ``cur/`` with its ``:2,`` info otherwise."""
        return ("cur/" + base + maildir.info_for(flags, self._kw)) if flags else "new/" + base

    def _commit_new(self, staged: list[tuple[Path, int, float, int, frozenset[str], bool]], *,
                    delivery: float | bool = False) -> list[MessageInfo]:
        """Rename files staged in ``tmp/`` into place, fsync, and commit their
        rows with new UIDs (one transaction).  Runs in a worker thread."""
        if not staged:
            return []
        assert self._index is not None
        uid = self.uidnext
        modseq = self.highestmodseq + 1
        made: list[MessageInfo] = []
        for tmp, size, idate, tz, flags, lf in staged:
            if tmp.parent.name == "tmp":
                rel = self._final_rel(tmp.name, flags)
                os.rename(tmp, self.path / rel)
            else:  # already placed (MOVE)
                rel = f"{tmp.parent.name}/{tmp.name}"
            base = maildir.base_name(tmp.name)
            made.append(MessageInfo(uid, size, idate, tz, flags, modseq, rel, base, lf))
            uid += 1
        maildir.fsync_dir(self.path / "new")
        if any(m.path.startswith("cur/") for m in made):
            maildir.fsync_dir(self.path / "cur")
        with self._index.transaction():
            for m in made:
                self._index.insert(Row(m.uid, m.base, m.path, m.size, m.internaldate, m.tzoffset, m.flags, m.modseq,
                                       m.lf))
            self._index.set_meta("uidnext", uid)
            self._index.set_meta("highestmodseq", modseq)
            self._index.set_meta("first_recent", self._first_recent)
            if delivery and self.name == "INBOX":
                self._index.set_meta("last_delivery", float(delivery))
        self.uidnext = uid
        self.highestmodseq = modseq
        if delivery:
            self.mailbox.last_delivery = float(delivery)
        return made  # the caller applies them to the view, on the event loop

    def _apply_new(self, made: list[MessageInfo]) -> None:
        for m in made:
            self._set(m)

    def _open_sync(self, create: bool) -> None:
        """Open (and repair) the index; runs in a worker thread under the lock."""
        path = self.path
        if not (path / "cur").is_dir():
            if not create:
                raise NoSuchFolder(f"no folder {self.name}")
            maildir.make_folder(path, subfolder=self.name != "INBOX")
        index_path = path / INDEX_FILE
        try:
            idx = Index(index_path)
        except IndexCorrupt as exc:
            log.error("index_corrupt_rebuilding", folder=self.name, error=str(exc))
            aside = index_path.with_name(f"{INDEX_FILE}.corrupt-{int(time.time())}")
            for suffix in ("", "-wal", "-shm"):
                p = Path(str(index_path) + suffix)
                if p.exists():
                    os.replace(p, Path(str(aside) + suffix))
            idx = Index(index_path)
        self._index = idx
        self.created_index = False
        preset: dict[str, int] = {}
        uidvalidity = idx.get_meta("uidvalidity")
        if uidvalidity is None:
            # A new index.  If Dovecot kept this folder, take over its UIDs,
            # UIDVALIDITY and keyword letters: clients keep their caches, and
            # POP3 UIDLs (which derive from them) stay what they were.
            validity, nextuid, preset = maildir.read_dovecot_uidlist(path)
            keywords = maildir.read_dovecot_keywords(path)
            with idx.transaction():
                if validity is not None:
                    self.mailbox._note_uidvalidity(validity)
                idx.set_meta("uidvalidity", validity or self.mailbox._allocate_uidvalidity(self))
                idx.set_meta("uidnext", nextuid)
                idx.set_meta("highestmodseq", 1)
                idx.set_meta("first_recent", nextuid)
                for keyword, letter in keywords.items():
                    idx.add_keyword(letter, keyword)
            self.created_index = True
            if validity is not None:
                log.info("dovecot_uids_taken_over", mailbox=self.mailbox.address, folder=self.name,
                         uidvalidity=validity, messages=len(preset))
        self.uidvalidity = int(idx.get_meta("uidvalidity"))
        self.uidnext = int(idx.get_meta("uidnext"))
        self.highestmodseq = int(idx.get_meta("highestmodseq"))
        self._first_recent = int(idx.get_meta("first_recent", 1))
        self._kw = idx.keywords()
        rows = idx.rows()
        self._repair(idx, rows, preset)

    def _repair(self, idx: Index, rows: list[Row], preset: dict[str, int] | None = None) -> None:
        """Make the index agree with the files (after a crash, or when another
        program changed the Maildir) and load the view."""
        maildir.clean_tmp(self.path)
        files = maildir.scan(self.path)
        known = {r.base for r in rows}
        missing = [r for r in rows if r.base not in files]
        moved = [(r, files[r.base]) for r in rows if r.base in files and files[r.base] != r.path]
        extra = [base for base in files if base not in known]
        if missing or moved or extra:
            letters = {v: k for k, v in self._kw.items()}
            infos = []
            for base in extra:
                rel = files[base]
                try:
                    data = (self.path / rel).read_bytes()
                    mtime = os.stat(self.path / rel).st_mtime
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
            uid = max([self.uidnext, *(u + 1 for u in preset.values())])
            modseq = self.highestmodseq + 1
            added = []
            with idx.transaction():
                idx.delete([r.uid for r in missing])
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
                    row = Row(this, base, rel, size, mtime, _local_offset_minutes(mtime),
                              maildir.flags_from_name(rel, letters), modseq, lf)
                    idx.insert(row)
                    added.append(row)
                idx.set_meta("uidnext", uid)
                idx.set_meta("highestmodseq", modseq)
            self.uidnext, self.highestmodseq = uid, modseq
            gone = {r.uid for r in missing}
            rows = [r for r in rows if r.uid not in gone] + added
            log.info("folder_repaired", mailbox=self.mailbox.address, folder=self.name,
                     expunged=len(missing), added=len(added), renamed=len(moved))
        self._msgs = {r.uid: MessageInfo(r.uid, r.size, r.internaldate, r.tzoffset, r.flags, r.modseq, r.path,
                                         r.base, r.lf)
                      for r in rows}
        self._uids = sorted(self._msgs)
        self._keywords = set(self._kw) | {f for m in self._msgs.values() for f in m.flags if not f.startswith("\\")}
        self.mailbox._usage_set(self.name, self.usage())

    def _close_sync(self) -> None:
        if self._index is not None:
            try:
                with self._index.transaction():
                    self._index.set_meta("first_recent", self._first_recent)
            except Exception:
                pass
            self._index.close()
            self._index = None


# ---------------------------------------------------------------------------
# Mailbox
# ---------------------------------------------------------------------------

class Mailbox:
    """One mailbox (a directory entry): its folders, subscriptions and usage."""

    def __init__(self, store: "Store", address: str) -> None:
        self.store = store
        self.address = address.lower()
        self.root = store.data_dir / _address_dir(address)
        self.lock = asyncio.Lock()
        self.last_delivery: float | None = None
        self._folders: dict[str, Folder] = {}
        self._usage: dict[str, Usage] = {}
        self._subscriptions: set[str] = set()
        self._last_uidvalidity = 0
        self._locks: dict[str, object] = {}

    # -- usage and quota ---------------------------------------------------------
    def usage(self) -> Usage:
        """Messages and bytes in all folders (kept current, no I/O)."""
        total = Usage()
        for u in list(self._usage.values()):  # a folder being opened may add an entry meanwhile
            total += u
        return total

    @property
    def quota_bytes(self) -> int | None:
        return self.store.quota_for(self.address)

    def _usage_delta(self, folder: str, messages: int, size: int) -> None:
        u = self._usage.get(folder, Usage())
        self._usage[folder] = Usage(u.messages + messages, u.bytes + size)

    def _usage_set(self, folder: str, usage: Usage) -> None:
        self._usage[folder] = usage

    def _check_space(self, size: int, quota_bytes: int | None) -> None:
        quota = self.quota_bytes if quota_bytes is None else quota_bytes
        used = self.usage().bytes
        if quota and used + size > quota:
            raise QuotaExceeded(used, quota, size)
        try:
            free = maildir.free_bytes(self.root)
        except OSError:
            return
        if free - size < self.store.min_free_bytes:
            raise DiskFull(f"not enough free space on the mail volume ({free} bytes free)")

    # -- exclusive use (POP3's maildrop lock) ------------------------------------
    def try_lock(self, kind: str, owner: object) -> bool:
        """Take the named exclusive lock (``"pop3"``: RFC 1939's maildrop lock)
        for ``owner``; False when someone else holds it."""
        holder = self._locks.get(kind)
        if holder is not None and holder is not owner:
            return False
        self._locks[kind] = owner
        return True

    def unlock(self, kind: str, owner: object) -> None:
        if self._locks.get(kind) is owner:
            del self._locks[kind]

    # -- folders ----------------------------------------------------------------
    async def folder(self, name: str) -> Folder:
        """An existing folder (``NoSuchFolder`` otherwise); INBOX always exists."""
        name = maildir.normalize_name(name)
        folder = self._folders.get(name)
        if folder is not None and folder._index is not None:
            folder.last_used = time.monotonic()
            return folder
        async with self.lock:
            return await self._open_locked(name)

    async def _open_locked(self, name: str, *, create: bool = False) -> Folder:
        folder = self._folders.get(name)
        if folder is None:
            folder = Folder(self, name)
        if folder._index is None:
            try:
                maildir.check_name(name)
            except maildir.BadFolderName as exc:
                raise NoSuchFolder(f"no folder {name}: {exc}") from None
            await _finish(asyncio.ensure_future(self.store.io(folder._open_sync, create or name == "INBOX")))
            self._folders[name] = folder
            self.store._opened(folder)
        return folder

    def _existing_names(self) -> list[str]:
        names = ["INBOX"]
        try:
            entries = os.listdir(self.root)
        except FileNotFoundError:
            return names
        for entry in entries:
            name = maildir.name_for(entry)
            if name is not None and name != "INBOX" and (self.root / entry / "cur").is_dir():
                names.append(name)
        return names

    async def list_folders(self) -> list[FolderEntry]:
        """Every folder, plus the parents implied by a child (not selectable),
        sorted by name with INBOX first."""
        names = set(await self.store.io(self._existing_names))
        implied = set()
        for name in names:
            parts = name.split(maildir.DELIMITER)
            for i in range(1, len(parts)):
                parent = maildir.DELIMITER.join(parts[:i])
                if parent not in names:
                    implied.add(parent)
        entries = [FolderEntry(n, True, SPECIAL_USE.get(n)) for n in names]
        entries += [FolderEntry(n, False, None) for n in implied]
        entries.sort(key=lambda e: (e.name != "INBOX", e.name))
        return entries

    async def exists(self, name: str) -> bool:
        name = maildir.normalize_name(name)
        if name in self._folders and not self._folders[name].deleted:
            return True
        return (self.root / maildir.dir_for(name) / "cur").is_dir()

    async def create(self, name: str) -> Folder:
        """Create a folder (and the parents it needs); FolderExists if it does."""
        try:
            name = maildir.check_name(name)
        except maildir.BadFolderName as exc:
            raise FolderError(str(exc)) from None
        async with self.lock:
            if name == "INBOX" or (self.root / maildir.dir_for(name) / "cur").is_dir():
                raise FolderExists(f"folder {name} already exists")
            parts = name.split(maildir.DELIMITER)
            for i in range(1, len(parts)):
                parent = maildir.DELIMITER.join(parts[:i])
                if parent != "INBOX" and not (self.root / maildir.dir_for(parent) / "cur").is_dir():
                    await self._open_locked(parent, create=True)
            return await self._open_locked(name, create=True)

    async def delete(self, name: str) -> None:
        """Delete a folder and its messages (its children stay; it then only
        exists as their parent).  INBOX cannot be deleted."""
        name = maildir.normalize_name(name)
        if name == "INBOX":
            raise FolderError("INBOX cannot be deleted")
        async with self.lock:
            path = self.root / maildir.dir_for(name)
            if not (path / "cur").is_dir():
                raise NoSuchFolder(f"no folder {name}")
            folder = self._folders.pop(name, None)
            if folder is not None:
                folder.deleted = True
                await self.store.io(folder._close_sync)
            await self.store.io(self._remove_dir, path)
            self._usage.pop(name, None)
            if folder is not None:
                folder.hub.publish("delete")

    def _remove_dir(self, path: Path) -> None:
        trash = self.root / TRASH_DIR
        trash.mkdir(exist_ok=True)
        target = trash / maildir.unique_name()
        os.rename(path, target)
        maildir.fsync_dir(self.root)
        shutil.rmtree(target, ignore_errors=True)

    async def rename(self, old: str, new: str) -> None:
        """RENAME: the folder and everything below it.  Renaming INBOX moves
        its messages into a new folder and leaves INBOX empty (RFC 3501)."""
        old = maildir.normalize_name(old)
        try:
            new = maildir.check_name(new)
        except maildir.BadFolderName as exc:
            raise FolderError(str(exc)) from None
        if new == "INBOX" or (self.root / maildir.dir_for(new) / "cur").is_dir():
            raise FolderExists(f"folder {new} already exists")
        if new.startswith(old + maildir.DELIMITER) and old != "INBOX":
            raise FolderError("cannot move a folder into itself")
        if old == "INBOX":
            inbox = await self.folder("INBOX")
            target = await self.create(new)
            await inbox.move(inbox.uids(), target)
            return
        async with self.lock:
            names = [n for n in self._existing_names() if n == old or n.startswith(old + maildir.DELIMITER)]
            if old not in names:
                raise NoSuchFolder(f"no folder {old}")
            # create missing parents of the new name first
            parts = new.split(maildir.DELIMITER)
            for i in range(1, len(parts)):
                parent = maildir.DELIMITER.join(parts[:i])
                if parent != "INBOX" and not (self.root / maildir.dir_for(parent) / "cur").is_dir() \
                        and not (parent == old or parent.startswith(old + maildir.DELIMITER)):
                    await self._open_locked(parent, create=True)
            for name in sorted(names, key=len):
                target = new + name[len(old):]
                folder = self._folders.pop(name, None)
                if folder is not None:
                    await self.store.io(folder._close_sync)
                src, dst = self.root / maildir.dir_for(name), self.root / maildir.dir_for(target)
                await self.store.io(os.rename, src, dst)
                if name in self._usage:
                    self._usage[target] = self._usage.pop(name)
                if folder is not None:
                    folder.name = target
                    self._folders[target] = folder
                    await _finish(asyncio.ensure_future(self.store.io(folder._open_sync, False)))
                    folder.hub.publish("rename", new_name=target)
                if name in self._subscriptions:
                    await self._subscribe_locked(target, True)
                    await self._subscribe_locked(name, False)
            await self.store.io(maildir.fsync_dir, self.root)

    # -- subscriptions --------------------------------------------------------------
    def subscriptions(self) -> list[str]:
        return sorted(self._subscriptions)

    async def subscribe(self, name: str, on: bool = True) -> None:
        name = maildir.normalize_name(name)
        async with self.lock:
            await self._subscribe_locked(name, on)

    async def _subscribe_locked(self, name: str, on: bool) -> None:
        inbox = await self._open_locked("INBOX")

        def work():
            assert inbox._index is not None
            with inbox._index.transaction():
                (inbox._index.subscribe if on else inbox._index.unsubscribe)(name)

        await inbox._run(work)
        (self._subscriptions.add if on else self._subscriptions.discard)(name)

    # -- opening ---------------------------------------------------------------------
    def _allocate_uidvalidity(self, folder: Folder) -> int:
        """A UIDVALIDITY greater than any this mailbox used before (so that a
        folder deleted and re-created, or an index rebuilt, never reuses one).
        The counter lives in its own small file at the mailbox root, apart from
        any index.  Runs in a thread, under the lock."""
        counter = self.root / UIDVALIDITY_FILE
        try:
            last = int(counter.read_text().strip() or 0)
        except (OSError, ValueError):
            last = 0
        value = max(int(self.store.clock()), last + 1, self._last_uidvalidity + 1)
        self._last_uidvalidity = value
        maildir.write_atomic(counter, f"{value}\n")
        return value

    def _note_uidvalidity(self, value: int) -> None:
        """A UIDVALIDITY taken over from elsewhere: later ones must exceed it."""
        counter = self.root / UIDVALIDITY_FILE
        try:
            last = int(counter.read_text().strip() or 0)
        except (OSError, ValueError):
            last = 0
        if value > last:
            maildir.write_atomic(counter, f"{value}\n")
        self._last_uidvalidity = max(self._last_uidvalidity, value)

    async def _open(self, create: bool) -> None:
        """Open INBOX (creating the Maildir and default folders when new), load
        subscriptions, repair and total every folder."""
        fresh = not (self.root / "cur").is_dir()
        async with self.lock:
            inbox = Folder(self, "INBOX")
            self._folders["INBOX"] = inbox
            await _finish(asyncio.ensure_future(self.store.io(self._open_inbox_sync, inbox)))
            self.store._opened(inbox)
            if fresh and create:
                for name in DEFAULT_FOLDERS:
                    await self._open_locked(name, create=True)
                for name in ("INBOX", *DEFAULT_FOLDERS):
                    await self._subscribe_locked(name, True)
            for name in await self.store.io(self._existing_names):
                if name not in self._folders:
                    await self._open_locked(name)

    def _open_inbox_sync(self, inbox: Folder) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        inbox._open_sync(True)
        assert inbox._index is not None
        if inbox.created_index:
            dovecot_subscriptions = maildir.read_dovecot_subscriptions(self.root)
            if dovecot_subscriptions:
                with inbox._index.transaction():
                    for name in dovecot_subscriptions:
                        inbox._index.subscribe(name)
        self._subscriptions = set(inbox._index.subscriptions())
        ld = inbox._index.get_meta("last_delivery")
        self.last_delivery = float(ld) if ld is not None else None
        trash = self.root / TRASH_DIR
        if trash.exists():
            shutil.rmtree(trash, ignore_errors=True)


# ---------------------------------------------------------------------------
# Store
# ---------------------------------------------------------------------------

DirectorySource = Any  # Reloading[Directory] | Directory | None


@dataclass
class Store:
    """All mailboxes under one data folder."""

    data_dir: Path
    directory: DirectorySource = None
    min_free_bytes: int = 0
    clock: Callable[[], float] = time.time
    max_open_folders: int = 512
    idle_close_seconds: float = 60.0
    io_threads: int = 4
    _mailboxes: dict[str, Mailbox] = field(default_factory=dict, repr=False)
    _opening: dict[str, asyncio.Future] = field(default_factory=dict, repr=False)
    _open_folders: list[Folder] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        # The store's own few threads for disk work: SQLite and file buffers
        # stay in few malloc arenas (the default executor's many threads each
        # grow their own and keep the memory), and a burst of password checks
        # on the default executor never queues ahead of the disk.
        self._executor: ThreadPoolExecutor | None = None

    def io(self, fn, *args) -> "asyncio.Future":
        """Run blocking disk work on the store's threads."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.io_threads, thread_name_prefix="mailstore-io")
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @classmethod
    def from_config(cls, config, directory: DirectorySource = None, **kwargs) -> "Store":
        """The store of ``config.mailstore.data_dir`` (resolved against the
        configuration folder), with its free-space floor."""
        data_dir = config.path(config.mailstore.data_dir)
        return cls(data_dir, directory, min_free_bytes=config.mailstore.min_free_bytes, **kwargs)

    # -- the directory ------------------------------------------------------------
    def _entry(self, address: str):
        d = self.directory
        if d is None:
            return None
        if hasattr(d, "get") and not hasattr(d, "lookup"):
            d = d.get()
        return d.lookup(address)

    def quota_for(self, address: str) -> int | None:
        """The mailbox's quota in bytes (``MailboxEntry.quota_bytes``); None
        when the directory does not know it (no limit)."""
        entry = self._entry(address)
        return entry.quota_bytes if entry is not None else None

    # -- mailboxes -------------------------------------------------------------------
    async def mailbox(self, address: str, *, create: bool = True) -> Mailbox:
        """The mailbox of a canonical address, opened (and created, with INBOX,
        Sent, Drafts, Trash and Junk, when ``create``) on first use."""
        key = address.strip().lower()
        mbox = self._mailboxes.get(key)
        if mbox is not None:
            return mbox
        pending = self._opening.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._opening[key] = fut
        try:
            mbox = Mailbox(self, key)
            if not create and not (mbox.root / "cur").is_dir():
                raise NoSuchFolder(f"no mailbox for {address}")
            await mbox._open(create)
            self._mailboxes[key] = mbox
            fut.set_result(mbox)
            return mbox
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved
            raise
        finally:
            self._opening.pop(key, None)

    async def deliver(self, address: str, message: bytes, *, folder: str = "INBOX",
                      flags: Iterable[str] = (), quota_bytes: int | None = None) -> int:
        """Store a delivered message in a mailbox's folder (INBOX unless the
        folder exists); returns the UID.  The message is on disk (fsynced)
        when this returns.  Raises :class:`QuotaExceeded` (usage of all folders
        plus this message over ``MailboxEntry.quota_bytes``) or
        :class:`DiskFull`."""
        mbox = await self.mailbox(address)
        try:
            target = await mbox.folder(folder)
        except NoSuchFolder:
            target = await mbox.folder("INBOX")
        return await target.append(message, flags=flags, quota_bytes=quota_bytes, delivery=True)

    async def usage(self, address: str) -> Usage:
        """Messages and bytes of a mailbox in all folders; zero for a mailbox
        that has never received mail (nothing is created)."""
        try:
            mbox = await self.mailbox(address, create=False)
        except NoSuchFolder:
            return Usage()
        return mbox.usage()

    def last_delivery(self, address: str) -> float | None:
        """When mail was last delivered (epoch seconds), if the mailbox is open."""
        mbox = self._mailboxes.get(address.strip().lower())
        return mbox.last_delivery if mbox else None

    async def close(self) -> None:
        """Close every index (the service calls this on stop)."""
        for mbox in list(self._mailboxes.values()):
            async with mbox.lock:
                for folder in list(mbox._folders.values()):
                    await self.io(folder._close_sync)
        self._mailboxes.clear()
        self._open_folders.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    # -- bounding open files -----------------------------------------------------------
    def _opened(self, folder: Folder) -> None:
        if folder not in self._open_folders:
            self._open_folders.append(folder)
        if len(self._open_folders) <= self.max_open_folders:
            return
        now = time.monotonic()
        for old in list(self._open_folders):
            if len(self._open_folders) <= self.max_open_folders:
                break
            if old is folder or len(old.hub) or old.mailbox.lock.locked() or old.name == "INBOX":
                continue
            if now - old.last_used < self.idle_close_seconds:
                continue
            old._close_sync()
            old.mailbox._folders.pop(old.name, None)
            self._open_folders.remove(old)
