"""One mailbox (a directory entry): its folders, their hierarchy,
subscriptions, usage and exclusive locks.

Every write to the mailbox (any folder) runs under :attr:`Mailbox.lock`, so
IMAP, POP3 and LMTP sessions on the same mailbox see one order of events.
Folder names are IMAP's (modified UTF-7, ``/`` between levels); on disk
they are Maildir++ directories (:mod:`..maildir`).  A deleted folder is
renamed into ``correo-trash/`` first (Dovecot ignores it), then removed, so
a crash never leaves half a folder visible.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .. import maildir
from . import quota
from .errors import FolderError, FolderExists, MailboxMoving, NoSuchFolder
from .folder import Folder
from .repair import Opened
from .threads import finish
from .uidvalidity import UidValidityCounter
from .values import DEFAULT_FOLDERS, SPECIAL_USE, FolderEntry, Usage

if TYPE_CHECKING:
    from .datadir import Store

TRASH_DIR = "correo-trash"  # deleted folders go here before removal (Dovecot ignores it)


def address_dir(address: str) -> str:
    """The directory name of a mailbox under the data folder."""
    name = address.strip().lower()
    if not name or name in (".", "..") or name.startswith("."):
        from .errors import StoreError
        raise StoreError(f"not a usable mailbox address: {address!r}")
    return name.replace("%", "%25").replace("/", "%2F").replace("\x00", "%00")


class Mailbox:
    def __init__(self, store: "Store", address: str) -> None:
        self.store = store
        self.address = address.lower()
        self.root = store.data_dir / address_dir(address)
        self.lock = asyncio.Lock()
        self.last_delivery: float | None = None
        self.uidvalidity = UidValidityCounter(self.root, store.clock)  # worker side
        self._folders: dict[str, Folder] = {}
        self._usage = quota.UsageBook()
        self._subscriptions: set[str] = set()
        self._locks: dict[str, object] = {}

    # -- usage and quota ---------------------------------------------------------
    def usage(self) -> Usage:
        """Messages and bytes in all folders (kept current, no I/O)."""
        return self._usage.total()

    @property
    def quota_bytes(self) -> int | None:
        return self.store.quota_for(self.address)

    def room_check(self, size: int, quota_bytes: int | None) -> Callable[[], None]:
        """Loop: snapshot the usage and quota now; the returned check runs in
        the worker (it reads the volume's free space) and raises
        :class:`QuotaExceeded` or :class:`DiskFull`.  The caller holds the
        lock, so the usage cannot change in between."""
        limit = self.quota_bytes if quota_bytes is None else quota_bytes
        used = self.usage().bytes
        root, min_free = self.root, self.store.min_free_bytes
        return lambda: quota.check_space(root, used, size, limit, min_free)

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
        if folder is not None and folder.is_open:
            folder.last_used = time.monotonic()
            return folder
        async with self.lock:
            return await self._open_locked(name)

    async def _open_locked(self, name: str, *, create: bool = False) -> Folder:
        if self.address in self.store.fenced:  # being moved to another shard: nothing opens here any more
            raise MailboxMoving(f"{self.address} is being moved to another mailstore shard; try again shortly")
        folder = self._folders.get(name)
        if folder is None:
            folder = Folder(self, name)
        if not folder.is_open:
            try:
                maildir.check_name(name)
            except maildir.BadFolderName as exc:
                raise NoSuchFolder(f"no folder {name}: {exc}") from None
            await finish(self.store.io(folder._open_work, create or name == "INBOX"), folder._load)
            self._folders[name] = folder
            self.store._opened(folder)
        return folder

    async def _close_locked(self, folder: Folder) -> None:
        closing = folder.detach()
        if closing is not None:
            await finish(self.store.io(folder._close_work, *closing))

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
        opened = self._folders
        entries = [FolderEntry(n, True, opened[n].special_use if n in opened else SPECIAL_USE.get(n)) for n in names]
        entries += [FolderEntry(n, False, None) for n in implied]
        entries.sort(key=lambda e: (e.name != "INBOX", e.name))
        return entries

    def _is_folder(self, name: str) -> bool:
        return (self.root / maildir.dir_for(name) / "cur").is_dir()

    async def exists(self, name: str) -> bool:
        name = maildir.normalize_name(name)
        if name in self._folders and not self._folders[name].deleted:
            return True
        return self._is_folder(name)

    async def _create_parents_locked(self, name: str, skip: Callable[[str], bool] = lambda _: False) -> None:
        parts = name.split(maildir.DELIMITER)
        for i in range(1, len(parts)):
            parent = maildir.DELIMITER.join(parts[:i])
            if parent != "INBOX" and not self._is_folder(parent) and not skip(parent):
                await self._open_locked(parent, create=True)

    async def create(self, name: str) -> Folder:
        """Create a folder (and the parents it needs); FolderExists if it does."""
        try:
            name = maildir.check_name(name)
        except maildir.BadFolderName as exc:
            raise FolderError(str(exc)) from None
        async with self.lock:
            if name == "INBOX" or self._is_folder(name):
                raise FolderExists(f"folder {name} already exists")
            await self._create_parents_locked(name)
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
                self.store._forget(folder)
                await self._close_locked(folder)
            await finish(self.store.io(self._remove_dir, path))
            self._usage.drop(name)
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
        if new == "INBOX" or self._is_folder(new):
            raise FolderExists(f"folder {new} already exists")
        if new.startswith(old + maildir.DELIMITER) and old != "INBOX":
            raise FolderError("cannot move a folder into itself")
        if old == "INBOX":
            inbox = await self.folder("INBOX")
            target = await self.create(new)
            await inbox.move(inbox.uids(), target)
            return
        below = old + maildir.DELIMITER
        async with self.lock:
            names = [n for n in await self.store.io(self._existing_names) if n == old or n.startswith(below)]
            if old not in names:
                raise NoSuchFolder(f"no folder {old}")
            # create missing parents of the new name first
            await self._create_parents_locked(new, skip=lambda p: p == old or p.startswith(below))
            for name in sorted(names, key=len):
                target = new + name[len(old):]
                folder = self._folders.pop(name, None)
                if folder is not None:
                    await self._close_locked(folder)
                src, dst = self.root / maildir.dir_for(name), self.root / maildir.dir_for(target)
                await finish(self.store.io(os.rename, src, dst))
                self._usage.rename(name, target)
                if folder is not None:
                    folder.name = target
                    self._folders[target] = folder
                    await finish(self.store.io(folder._open_work, False), folder._load)
                    folder.hub.publish("rename", new_name=target)
                if name in self._subscriptions:
                    await self._subscribe_locked(target, True)
                    await self._subscribe_locked(name, False)
            await finish(self.store.io(maildir.fsync_dir, self.root))

    # -- subscriptions --------------------------------------------------------------
    def subscriptions(self) -> list[str]:
        return sorted(self._subscriptions)

    async def subscribe(self, name: str, on: bool = True) -> None:
        name = maildir.normalize_name(name)
        async with self.lock:
            await self._subscribe_locked(name, on)

    async def _subscribe_locked(self, name: str, on: bool) -> None:
        inbox = await self._open_locked("INBOX")

        def apply(_: None) -> None:
            (self._subscriptions.add if on else self._subscriptions.discard)(name)

        await inbox._run(lambda disk: disk.set_subscribed([name], on), apply=apply)

    # -- opening ---------------------------------------------------------------------
    async def _open(self, create: bool) -> None:
        """Open INBOX (creating the Maildir and default folders when new), load
        subscriptions, repair and total every folder."""
        fresh = not (self.root / "cur").is_dir()
        async with self.lock:
            inbox = Folder(self, "INBOX")
            self._folders["INBOX"] = inbox

            def apply(result: tuple[Opened, list[str], float | None]) -> None:
                opened, subscriptions, last_delivery = result
                inbox._load(opened)
                self._subscriptions = set(subscriptions)
                self.last_delivery = last_delivery

            await finish(self.store.io(self._open_inbox_work, inbox), apply)
            self.store._opened(inbox)
            if fresh and create:
                for name in DEFAULT_FOLDERS:
                    await self._open_locked(name, create=True)
                for name in ("INBOX", *DEFAULT_FOLDERS):
                    await self._subscribe_locked(name, True)
            for name in await self.store.io(self._existing_names):
                if name not in self._folders:
                    await self._open_locked(name)

    def _open_inbox_work(self, inbox: Folder) -> tuple[Opened, list[str], float | None]:
        """Thread: the Maildir root, INBOX, its subscriptions (taken over from
        Dovecot's ``subscriptions`` file on a new index), the last delivery."""
        self.root.mkdir(parents=True, exist_ok=True)
        opened = inbox._open_work(True)
        index = opened.disk.index
        if opened.created_index:
            dovecot_subscriptions = maildir.read_dovecot_subscriptions(self.root)
            if dovecot_subscriptions:
                opened.disk.set_subscribed(dovecot_subscriptions, True)
        last = index.get_meta("last_delivery")
        trash = self.root / TRASH_DIR
        if trash.exists():
            shutil.rmtree(trash, ignore_errors=True)
        return opened, index.subscriptions(), (float(last) if last is not None else None)
