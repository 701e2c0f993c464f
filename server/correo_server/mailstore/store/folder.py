"""One folder of a mailbox: its in-memory view and the writes that change it.

The view (:meth:`Folder.messages`, :meth:`Folder.get`, the counters) is what
sessions read, without I/O, and it is always consistent with the last
committed write.  Each write takes the mailbox lock, snapshots what it
needs from the view, runs the disk work on a worker thread
(:class:`~.disk.FolderDisk`) and applies what the thread returns on the
event loop (:mod:`.threads`); then it tells the folder's watchers
(:mod:`..changes`), except the session that did it (``origin``).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ...osutil import can_sync_filesystem, sync_filesystem
from .. import maildir
from ..changes import Hub, Watcher
from . import quota
from .disk import FolderDisk, Staged, locate, read_message
from .errors import FolderError, MailboxMoving, MessageGone, NoSuchFolder, StoreError, disk_error
from .repair import Opened, open_folder
from .threads import finish
from .values import SPECIAL_USE, AlreadyDelivered, MessageInfo, Usage, local_offset_minutes

if TYPE_CHECKING:
    from .mailbox import Mailbox

SYNC_READ_LIMIT = 256 * 1024  # smaller files are read on the event loop (page cache)


def _flags(flags: Iterable[str]) -> frozenset[str]:
    return frozenset(maildir.canonical_flag(f) for f in flags if f.lower() != "\\recent")


def flag_changes(msgs: Iterable[MessageInfo], wanted: frozenset[str], mode: str, unchanged_since: int | None
                 ) -> tuple[list[tuple[MessageInfo, frozenset[str]]], list[int]]:
    """What STORE changes: (message, its new flags) for each message whose
    flags change, and the UIDs refused because their MODSEQ is above
    ``unchanged_since`` (RFC 7162).  ``mode``: add, remove or replace."""
    changes: list[tuple[MessageInfo, frozenset[str]]] = []
    failed: list[int] = []
    for msg in msgs:
        if unchanged_since is not None and msg.modseq > unchanged_since:
            failed.append(msg.uid)
            continue
        new = msg.flags | wanted if mode == "add" else msg.flags - wanted if mode == "remove" else wanted
        if new != msg.flags:
            changes.append((msg, new))
    return changes, failed


class Folder:
    """One Maildir folder of a mailbox.  Obtain with :meth:`Mailbox.folder`."""

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
        self._keywords: set[str] = set()  # every keyword any message here has had
        self._disk: FolderDisk | None = None  # None: closed (never opened, or evicted)
        self.created_index = False  # the index was made on this open (not found on disk)
        self.ext: dict[str, str] = {}  # the index's ext.* values, as of the last open or write
        self.last_used = time.monotonic()

    # -- where -------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self.mailbox.root / maildir.dir_for(self.name)

    @property
    def special_use(self) -> str | None:
        """The one a client gave at CREATE (RFC 6154), else the default by name."""
        return self.ext.get("special_use") or SPECIAL_USE.get(self.name)

    @property
    def is_open(self) -> bool:
        return self._disk is not None

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

    def recent_uids(self) -> set[int]:
        """The messages \\Recent now, without claiming them (EXAMINE)."""
        return {u for u in self._uids if u >= self._first_recent}

    def take_recent(self) -> set[int]:
        """Claim the messages still \\Recent (RFC 3501: only one session sees a
        message as recent).  The caller (a read-write SELECT, or a selected
        session seeing new mail) shows them with \\Recent."""
        recent = self.recent_uids()
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

    async def read(self, uid: int) -> bytes:
        """The message's bytes exactly as stored (as delivered or appended)."""
        msg = self._msgs.get(uid)
        if msg is None:
            raise MessageGone(f"message UID {uid} no longer exists")
        self.last_used = time.monotonic()
        if msg.size <= SYNC_READ_LIMIT:
            data, moved = read_message(self.path, msg)
        else:
            data, moved = await self.mailbox.store.io(read_message, self.path, msg)
        if moved is not None:
            self._moved({msg.base: moved})
        return data

    async def map_messages(self, uids: Iterable[int], fn: Callable[[bytes], Any]) -> dict[int, Any]:
        """``fn(bytes)`` of each message's content, run on the store's
        threads (as :meth:`read` serves it; no lock needed); messages gone
        meanwhile are left out.  For work over many messages at once (the
        summaries SORT and THREAD need)."""
        msgs = [m for u in uids if (m := self._msgs.get(u)) is not None]
        if not msgs:
            return {}
        path = self.path
        self.last_used = time.monotonic()

        def work() -> tuple[dict[int, Any], dict[str, str]]:
            out: dict[int, Any] = {}
            moved: dict[str, str] = {}
            for msg in msgs:
                try:
                    data, where = read_message(path, msg)
                except (MessageGone, OSError):
                    continue
                if where is not None:
                    moved[msg.base] = where
                out[msg.uid] = fn(data)
            return out, moved

        out, moved = await self.mailbox.store.io(work)
        self._moved(moved)
        return out

    # -- what the index keeps for the protocol extensions ---------------------
    async def vanished_since(self, modseq: int) -> tuple[list[int], bool]:
        """UIDs expunged after ``modseq`` (QRESYNC), and whether that list
        is complete (False: the index began recording after ``modseq``)."""
        async with self.mailbox.lock:
            self._check_alive()
            return await self._run(lambda disk: disk.index.vanished(modseq))

    async def message_data(self, kind: str) -> dict[int, bytes]:
        """Values of one kind derived from the messages (UID → bytes)."""
        async with self.mailbox.lock:
            self._check_alive()
            return await self._run(lambda disk: disk.index.message_data(kind))

    async def message_data_for(self, kind: str, uids: list[int]) -> dict[int, bytes]:
        """Values of one kind kept for these messages (those that have one)."""
        if not uids:
            return {}
        async with self.mailbox.lock:
            self._check_alive()
            return await self._run(lambda disk: disk.index.message_data_for(kind, uids))

    async def delivered(self, keys: tuple[str, ...] | list[str]) -> dict[str, int]:
        """Those delivery keys (:mod:`correo_server.deliverykeys`) this
        folder's index has: key → UID of the message they stored."""
        if not keys:
            return {}
        async with self.mailbox.lock:
            self._check_alive()
            return await self._run(lambda disk: disk.index.delivered(list(keys)))

    async def remember_deliveries(self, keys: tuple[str, ...] | list[str], uid: int) -> None:
        """Record delivery keys of a delivery stored elsewhere (mail rules
        may file it into another folder, or keep nothing: ``uid`` 0)."""
        if not keys:
            return
        when = self.mailbox.store.clock()
        async with self.mailbox.lock:
            self._check_alive()

            def work(disk: FolderDisk) -> None:
                with disk.index.transaction():
                    disk.index.record_deliveries([(k, uid, when) for k in keys])

            await self._run(work)

    async def put_message_data(self, kind: str, rows: dict[int, bytes]) -> None:
        """Keep derived values in the index; they go when the message goes,
        and a copy or a move carries them."""
        if not rows:
            return
        async with self.mailbox.lock:
            self._check_alive()

            def work(disk: FolderDisk) -> None:
                with disk.index.transaction():
                    disk.index.put_message_data(kind, rows)

            await self._run(work)

    async def ext_meta(self, key: str, make: Callable[[], str] | None = None) -> str | None:
        """A folder-wide value an extension keeps in the index (``ext.<key>``
        in meta; MAILBOXID), made and stored by ``make`` on first use.  Known
        values are answered from memory (:attr:`ext`)."""
        if key in self.ext or make is None:
            return self.ext.get(key)
        async with self.mailbox.lock:
            self._check_alive()

            def work(disk: FolderDisk) -> str | None:
                value = disk.index.get_meta("ext." + key)
                if value is None and make is not None:
                    value = make()
                    with disk.index.transaction():
                        disk.index.set_meta("ext." + key, value)
                return None if value is None else str(value)

            def apply(value: str | None) -> None:
                if value is not None:
                    self.ext[key] = value

            return await self._run(work, apply=apply)

    async def set_ext_meta(self, key: str, value: str | None) -> None:
        async with self.mailbox.lock:
            self._check_alive()

            def work(disk: FolderDisk) -> None:
                with disk.index.transaction():
                    if value is None:
                        disk.index.db.execute("DELETE FROM meta WHERE key = ?", ("ext." + key,))
                    else:
                        disk.index.set_meta("ext." + key, value)

            def apply(_: None) -> None:
                if value is None:
                    self.ext.pop(key, None)
                else:
                    self.ext[key] = value

            await self._run(work, apply=apply)

    # -- writing (each under the mailbox lock, blocking parts in a thread) ----
    async def append(self, data: bytes, *, flags: Iterable[str] = (), internaldate: float | None = None,
                     tzoffset: int | None = None, quota_bytes: int | None = None,
                     delivery: bool = False) -> int:
        """Store a new message; returns its UID.  ``quota_bytes`` (None: the
        directory's quota for the mailbox, 0: no limit) is checked against the
        mailbox's usage in all folders.  Raises :class:`QuotaExceeded`,
        :class:`DiskFull`, :class:`NoSuchFolder` (folder deleted meanwhile)."""
        data = bytes(data)
        flagset = _flags(flags)
        now = self.mailbox.store.clock()
        idate = now if internaldate is None else internaldate
        tz = local_offset_minutes(idate) if tzoffset is None else tzoffset
        when = now if delivery else None

        async with self.mailbox.lock:
            self._check_alive()
            room = self.mailbox.room_check(len(data), quota_bytes)
            first_recent = self._first_recent

            def work(disk: FolderDisk) -> list[MessageInfo]:
                room()
                disk.ensure_keywords(flagset)
                try:
                    tmp = maildir.write_tmp(disk.path, data, mtime=idate, now=now)
                except OSError as exc:
                    raise disk_error(exc) from exc
                return disk.commit_new([(tmp, len(data), idate, tz, flagset, False)], first_recent=first_recent,
                                       delivery=when, inbox=self.name == "INBOX")

            made = await self._run(work, apply=lambda made: self._apply_new(made, delivery=when))
        self.hub.publish("append", (made[0].uid,))
        return made[0].uid

    async def append_many(self, messages: list[bytes], *, delivery: bool = False,
                          quota_bytes: int | None = None,
                          keys: list[tuple[str, ...]] | None = None) -> list[int | Exception]:
        """Store several new messages as one group commit (LMTP deliveries
        that arrived together): one thread call, each file written and
        fsynced, then all renamed into place, the folder fsynced once and
        their rows committed in one transaction.  One result per message, in
        order: its UID, or the :class:`QuotaExceeded` / :class:`DiskFull` (or
        other ``OSError``) that refused it (the others are stored; quota and
        free space are counted message by message).  Raises what :meth:`append` raises for
        the folder as a whole.

        ``keys`` (per message: its delivery keys, :mod:`correo_server.deliverykeys`)
        are checked first, under the lock: a message with a key already
        recorded here (or twice in this batch) is not stored again and its
        result is the earlier message's UID as :class:`AlreadyDelivered`;
        the others' keys are committed with their rows."""
        now = self.mailbox.store.clock()
        tz = local_offset_minutes(now)
        when = now if delivery else None

        async with self.mailbox.lock:
            self._check_alive()
            limit = self.mailbox.quota_bytes if quota_bytes is None else quota_bytes
            used = self.mailbox.usage().bytes
            root, min_free = self.mailbox.root, self.mailbox.store.min_free_bytes
            first_recent = self._first_recent

            def work(disk: FolderDisk) -> tuple[list[int | Exception], list[MessageInfo]]:
                try:
                    free: int | None = maildir.free_bytes(root)
                except OSError:
                    free = None
                taken = 0
                results: list[Any] = []
                staged: list[Staged] = []
                staged_keys: list[tuple[str, ...]] = []
                known = disk.index.delivered([k for ks in keys for k in ks]) if keys else {}
                first: dict[str, int] = {}  # key → the message of this batch that stores it
                # Several files: written, then made durable together by one
                # syncfs (one journal commit and cache flush instead of one
                # fsync each, which cost about 1 ms of CPU and 7 ms of disk
                # each here); the fd is opened first, so that syncfs reports
                # a failed write of any of them.
                together = len(messages) > 1 and can_sync_filesystem()
                sync_fd = os.open(disk.path / "tmp", os.O_RDONLY | os.O_DIRECTORY) if together else -1
                try:
                    for i, data in enumerate(messages):
                        mine = keys[i] if keys else ()
                        earlier = next((known[k] for k in mine if k in known), None)
                        if earlier is not None:
                            results.append(AlreadyDelivered(earlier))
                            continue
                        twin = next((first[k] for k in mine if k in first), None)
                        if twin is not None:
                            results.append(("twin", twin))
                            continue
                        try:
                            quota.check_room(used + taken, len(data), limit,
                                             None if free is None else free - taken, min_free)
                            tmp = maildir.write_tmp(disk.path, data, mtime=now, now=now, keys=mine,
                                                    sync=not together)
                        except StoreError as exc:
                            results.append(exc)
                            continue
                        except OSError as exc:
                            results.append(disk_error(exc))
                            continue
                        staged.append((tmp, len(data), now, tz, frozenset(), False))
                        staged_keys.append(mine)
                        for k in mine:
                            first[k] = i
                        taken += len(data)
                        results.append(-1)
                    if together and staged:
                        try:
                            sync_filesystem(sync_fd)
                        except OSError as exc:  # none of them is known to be on disk: none is stored
                            for tmp, *_ in staged:
                                try:
                                    os.unlink(tmp)
                                except OSError:
                                    pass
                            staged, staged_keys = [], []
                            failed = disk_error(exc)
                            results = [failed if isinstance(r, int) and r == -1 else r for r in results]
                    made = disk.commit_new(staged, first_recent=first_recent, delivery=when,
                                           inbox=self.name == "INBOX", keys=staged_keys if keys else None)
                except BaseException:
                    for tmp, *_ in staged:
                        try:
                            os.unlink(tmp)
                        except OSError:
                            pass
                    raise
                finally:
                    if sync_fd >= 0:
                        os.close(sync_fd)
                uids = iter(m.uid for m in made)
                out = [next(uids) if isinstance(r, int) and r == -1 else r for r in results]
                for i, r in enumerate(out):
                    if isinstance(r, tuple):  # the same delivery twice in one batch: stored once
                        stored = out[r[1]]
                        out[i] = AlreadyDelivered(stored) if isinstance(stored, int) else stored
                return out, made

            results, _made = await self._run(work, apply=lambda out: self._apply_new(out[1], delivery=when))
        stored = tuple(r for r in results if isinstance(r, int))
        if stored:
            self.hub.publish("append", stored)
        return results

    async def append_all(self, items: list[tuple[bytes, Iterable[str], float | None, int | None]], *,
                         quota_bytes: int | None = None) -> list[int]:
        """Store several messages (data, flags, internal date, zone offset)
        all or none (MULTIAPPEND, RFC 3502): quota and free space are checked
        for all of them together, every file is written before any is put in
        place, and their rows commit in one transaction; on any failure the
        files written are removed and nothing is stored.  Returns the UIDs in
        order.  (A crash between the renames and the commit leaves files the
        next open adopts: atomic for clients, not against power loss.)"""
        if not items:
            return []
        now = self.mailbox.store.clock()
        prepared = []
        for data, flags, internaldate, tzoffset in items:
            idate = now if internaldate is None else internaldate
            tz = local_offset_minutes(idate) if tzoffset is None else tzoffset
            prepared.append((bytes(data), _flags(flags), idate, tz))
        total = sum(len(d) for d, *_ in prepared)

        async with self.mailbox.lock:
            self._check_alive()
            room = self.mailbox.room_check(total, quota_bytes)
            first_recent = self._first_recent

            def work(disk: FolderDisk) -> list[MessageInfo]:
                room()
                disk.ensure_keywords(frozenset().union(*(f for _, f, _, _ in prepared)))
                staged: list[Staged] = []
                try:
                    for data, flagset, idate, tz in prepared:
                        try:
                            tmp = maildir.write_tmp(disk.path, data, mtime=idate, now=now)
                        except OSError as exc:
                            raise disk_error(exc) from exc
                        staged.append((tmp, len(data), idate, tz, flagset, False))
                    return disk.commit_new(staged, first_recent=first_recent)
                except BaseException:
                    for tmp, _, _, _, flagset, _ in staged:  # wherever commit_new had put it
                        for where in (tmp, disk.path / disk.final_rel(tmp.name, flagset)):
                            try:
                                os.unlink(where)
                            except OSError:
                                pass
                    raise

            made = await self._run(work, apply=self._apply_new)
        self.hub.publish("append", tuple(m.uid for m in made))
        return [m.uid for m in made]

    async def store(self, uids: Iterable[int], flags: Iterable[str], mode: str = "replace", *,
                    unchanged_since: int | None = None, origin: object = None
                    ) -> tuple[list[MessageInfo], list[int]]:
        """Change flags: ``mode`` is ``add``, ``remove`` or ``replace``.

        Returns (messages whose flags changed, now with their new MODSEQ;
        UIDs left alone because their MODSEQ is above ``unchanged_since``,
        RFC 7162).  Other watchers are told; ``origin`` (the session doing it)
        is not.
        """
        wanted = _flags(flags)
        async with self.mailbox.lock:
            self._check_alive()
            msgs = [m for u in uids if (m := self._msgs.get(u)) is not None]
            changes, failed = flag_changes(msgs, wanted, mode, unchanged_since)
            updated: list[MessageInfo] = []
            if changes:
                updated = await self._run(lambda disk: disk.set_flags(changes), apply=self._apply_changed)
        if updated:
            self.hub.publish("flags", tuple(m.uid for m in updated), origin=origin)
        return updated, failed

    async def expunge(self, uids: Iterable[int], *, origin: object = None) -> list[int]:
        """Remove these messages for good; returns the UIDs removed (in order)."""
        async with self.mailbox.lock:
            self._check_alive()
            victims = [self._msgs[u] for u in sorted(set(uids)) if u in self._msgs]
            gone: list[int] = []
            if victims:
                gone = await self._run(lambda disk: disk.expunge(victims), apply=self._drop)
        if gone:
            self.hub.publish("expunge", tuple(gone), origin=origin)
        return gone

    async def copy(self, uids: Iterable[int], dest: "Folder", *, quota_bytes: int | None = None
                   ) -> list[tuple[int, int]]:
        """Copy messages (with their flags and internal dates) into ``dest`` of
        the same mailbox; returns (source UID, new UID) pairs."""
        if dest.mailbox is not self.mailbox:
            raise FolderError("copies between mailboxes are not supported")

        async with self.mailbox.lock:
            self._check_alive()
            dest._check_alive()
            msgs = [self._msgs[u] for u in sorted(set(uids)) if u in self._msgs]
            room = self.mailbox.room_check(sum(m.size for m in msgs), quota_bytes)
            first_recent = dest._first_recent
            await dest._ensure_open()

            def work(disk: FolderDisk) -> tuple[list[tuple[int, int]], list[MessageInfo], dict[str, str]]:
                room()
                target = dest._disk
                assert target is not None
                target.ensure_keywords(frozenset().union(*(m.flags for m in msgs)) if msgs else frozenset())
                staged: list[Staged] = []
                moved: dict[str, str] = {}
                try:
                    for msg in msgs:
                        src = disk.path / msg.path
                        if not src.exists():
                            moved[msg.base] = locate(disk.path, msg)
                            src = disk.path / moved[msg.base]
                        tmp = maildir.link_tmp(target.path, src, mtime=msg.internaldate)
                        staged.append((tmp, msg.size, msg.internaldate, msg.tzoffset, msg.flags, msg.lf))
                except OSError as exc:
                    for item in staged:
                        item[0].unlink(missing_ok=True)
                    raise disk_error(exc) from exc
                kept = disk.index.message_data_of([m.uid for m in msgs])
                new = target.commit_new(staged, first_recent=first_recent,
                                        carried=[kept.get(m.uid, {}) for m in msgs])
                return [(m.uid, n.uid) for m, n in zip(msgs, new)], new, moved

            def apply(result) -> None:
                _, new, moved = result
                dest._apply_new(new)
                self._moved(moved)

            pairs, _, _ = await self._run(work, apply=apply)
        if pairs:
            dest.hub.publish("append", tuple(p[1] for p in pairs))
        return pairs

    async def move(self, uids: Iterable[int], dest: "Folder", *, origin: object = None
                   ) -> list[tuple[int, int]]:
        """Move messages into ``dest`` (RFC 6851): renamed across, never copied,
        so a crash leaves each message in exactly one of the two folders (or,
        at worst, listed in both until the next repair).  Returns pairs.
        ``dest`` may be this folder: the messages get new UIDs and the old
        ones are expunged (RFC 6851 does not forbid it; Dovecot does it)."""
        if dest.mailbox is not self.mailbox:
            raise FolderError("moves between mailboxes are not supported")

        async with self.mailbox.lock:
            self._check_alive()
            dest._check_alive()
            msgs = [self._msgs[u] for u in sorted(set(uids)) if u in self._msgs]
            first_recent = dest._first_recent
            await dest._ensure_open()

            def work(disk: FolderDisk) -> tuple[list[tuple[int, int]], list[MessageInfo]]:
                target = dest._disk
                assert target is not None
                target.ensure_keywords(frozenset().union(*(m.flags for m in msgs)) if msgs else frozenset())
                staged: list[Staged] = []
                moved: list[MessageInfo] = []
                for msg in msgs:
                    # straight into place (never via tmp/, which a repair empties)
                    src = disk.path / msg.path
                    final = target.path / target.final_rel(maildir.fresh_base(msg.base), msg.flags)
                    try:
                        os.rename(src, final)
                    except FileNotFoundError:
                        try:
                            os.rename(disk.path / locate(disk.path, msg), final)
                        except (MessageGone, FileNotFoundError):
                            continue
                    staged.append((final, msg.size, msg.internaldate, msg.tzoffset, msg.flags, msg.lf))
                    moved.append(msg)
                for sub in ("cur", "new"):
                    maildir.fsync_dir(disk.path / sub)
                kept = disk.index.message_data_of([m.uid for m in moved])
                new = target.commit_new(staged, first_recent=first_recent,
                                        carried=[kept.get(m.uid, {}) for m in moved])
                disk.drop_rows([m.uid for m in moved])
                return [(m.uid, n.uid) for m, n in zip(moved, new)], new

            def apply(result) -> None:
                pairs, new = result
                dest._apply_new(new)
                self._drop([src for src, _ in pairs])

            pairs, _ = await self._run(work, apply=apply)
        if pairs:
            dest.hub.publish("append", tuple(p[1] for p in pairs))
            self.hub.publish("expunge", tuple(p[0] for p in pairs), origin=origin)
        return pairs

    # -- the thread hop -----------------------------------------------------
    def _check_alive(self) -> None:
        if self.deleted:
            raise NoSuchFolder(f"folder {self.name} was deleted")

    async def _ensure_open(self) -> None:
        """Reopen a folder closed to bound open files (the caller holds the lock)."""
        if self._disk is None:
            await finish(self.mailbox.store.io(self._open_work, False), self._load)

    async def _run(self, fn: Callable[[FolderDisk], Any], *, apply: Callable[[Any], None] | None = None) -> Any:
        """Run ``fn(disk)`` in a thread, to completion, then ``apply`` its
        result to the view on the event loop (the caller holds the lock)."""
        if self.mailbox.address in self.mailbox.store.fenced:  # fenced for a move while we waited for the lock
            raise MailboxMoving(f"{self.mailbox.address} is being moved to another mailstore shard; try again shortly")
        self.last_used = time.monotonic()
        await self._ensure_open()
        disk = self._disk
        assert disk is not None
        return await finish(self.mailbox.store.io(fn, disk), apply)

    # -- opening and closing (worker side, then the view) -------------------
    def _open_work(self, create: bool) -> Opened:
        """Thread: open and repair; the result is applied by :meth:`_load`."""
        return open_folder(self.path, name=self.name, address=self.mailbox.address, create=create,
                           uidvalidity=self.mailbox.uidvalidity)

    def _close_work(self, disk: FolderDisk, first_recent: int) -> None:
        disk.close(first_recent)

    def detach(self) -> tuple[FolderDisk, int] | None:
        """Loop: take the folder's disk side away to close it (in a thread,
        with :meth:`_close_work`); the view stays until the folder reopens."""
        disk, self._disk = self._disk, None
        return (disk, self._first_recent) if disk is not None else None

    # -- applying to the view (event loop only) -----------------------------
    def _load(self, opened: Opened) -> None:
        self._disk = opened.disk
        self.created_index = opened.created_index
        self.ext = dict(opened.ext)
        self.uidvalidity = opened.uidvalidity
        self._first_recent = opened.first_recent
        self._msgs = {m.uid: m for m in opened.messages}
        self._uids = [m.uid for m in opened.messages]
        self._keywords = set(opened.disk.kw) | {f for m in opened.messages for f in m.flags
                                                if not f.startswith("\\")}
        self._counters()
        self.mailbox._usage.set(self.name, self.usage())

    def _counters(self) -> None:
        disk = self._disk
        if disk is not None:
            self.uidnext = disk.uidnext
            self.highestmodseq = disk.highestmodseq

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
            self.mailbox._usage.delta(self.name, 1, msg.size)
        elif old.size != msg.size:
            self.mailbox._usage.delta(self.name, 0, msg.size - old.size)

    def _apply_new(self, made: list[MessageInfo], *, delivery: float | None = None) -> None:
        for m in made:
            self._set(m)
        self._counters()
        if delivery is not None:
            self.mailbox.last_delivery = float(delivery)

    def _apply_changed(self, updated: list[MessageInfo]) -> None:
        for m in updated:
            self._set(m)
        self._counters()

    def _moved(self, found: dict[str, str]) -> None:
        """Files found elsewhere (renamed by another program): the view follows."""
        if not found:
            return
        for uid in self._uids:
            msg = self._msgs[uid]
            if msg.base in found and msg.path != found[msg.base]:
                self._msgs[uid] = MessageInfo(msg.uid, msg.size, msg.internaldate, msg.tzoffset, msg.flags,
                                              msg.modseq, found[msg.base], msg.base, msg.lf)

    def _drop(self, uids: list[int]) -> None:
        gone = set(uids)
        size = 0
        for uid in gone:
            msg = self._msgs.pop(uid, None)
            if msg is not None:
                size += msg.size
        self._uids = [u for u in self._uids if u not in gone]
        self.mailbox._usage.delta(self.name, -len(gone), -size)
        self._counters()

