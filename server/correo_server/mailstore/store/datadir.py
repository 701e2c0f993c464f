"""The :class:`Store`: all mailboxes under one data folder, the worker
threads they share, and the bound on open folders.

A mailbox is opened (and created, with INBOX, Sent, Drafts, Trash and Junk)
on first use; concurrent first uses wait for one opening.  Open folders are
bounded (``max_open_folders``): past the bound, folders idle for
``idle_close_seconds`` that nobody watches are closed (their index handle
goes; INBOX and folders of a locked mailbox stay).
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import MailboxMoving, NoSuchFolder
from .folder import Folder
from .mailbox import Mailbox
from .threads import IoPool, finish
from .values import Usage

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
    # Mailboxes fenced for a move to another shard (address → the fence,
    # :mod:`..transfer`): not opened, not written (MailboxMoving).
    fenced: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self._pool = IoPool(self.io_threads)

    def io(self, fn, *args) -> "asyncio.Future":
        """Run blocking disk work on the store's threads (:mod:`.threads`)."""
        return self._pool.run(fn, *args)

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
        if key in self.fenced:
            raise MailboxMoving(f"{key} is being moved to another mailstore shard; try again shortly")
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

    async def release(self, address: str) -> None:
        """Close a (fenced) mailbox for good: wait for the write in progress
        (the mailbox lock), close every folder's index, forget the mailbox.
        Its files are then still and whole (an export copies them)."""
        key = address.strip().lower()
        mbox = self._mailboxes.get(key)
        if mbox is None:
            return
        async with mbox.lock:
            for folder in list(mbox._folders.values()):
                await mbox._close_locked(folder)
                self._forget(folder)
            mbox._folders.clear()
        self._mailboxes.pop(key, None)

    async def close(self) -> None:
        """Close every index (the service calls this on stop)."""
        for mbox in list(self._mailboxes.values()):
            async with mbox.lock:
                for folder in list(mbox._folders.values()):
                    await mbox._close_locked(folder)
        self._mailboxes.clear()
        self._open_folders.clear()
        self._pool.shutdown()

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
            self._evict(old)

    def _evict(self, folder: Folder) -> None:
        """Close an idle folder: the loop takes its disk side away at once, a
        worker closes the index (nobody waits for it)."""
        closing = folder.detach()
        if closing is not None:
            asyncio.ensure_future(finish(self.io(folder._close_work, *closing)))
        if folder.mailbox._folders.get(folder.name) is folder:
            del folder.mailbox._folders[folder.name]
        self._open_folders.remove(folder)

    def _forget(self, folder: Folder) -> None:
        """A deleted folder no longer counts as open."""
        if folder in self._open_folders:
            self._open_folders.remove(folder)
