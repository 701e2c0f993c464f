"""Change notification inside the mailstore process: who must hear about what.

Every session that has a folder open (an IMAP session with it selected, one
in IDLE, a POP3 session) holds a :class:`Watcher` on it.  When anything
changes the folder — an LMTP delivery, a POP3 deletion, another IMAP session's
STORE or EXPUNGE — the :class:`~.store.Folder` calls :meth:`Hub.publish`, which
records the change on every other watcher and wakes it.  A session collects
what it was told when the protocol lets it speak (IMAP: after a command, or
at once during IDLE) with :meth:`Watcher.take`.

Watchers only remember *which* UIDs changed; the session reads the current
state from the folder, so that many changes to one message collapse into one
untagged FETCH.  Only one mailstore process serves a volume, so in-process
notification is all there is to do.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass
class Pending:
    """What happened since a watcher last looked."""

    appended: bool = False  # new messages may exist (compare UIDs with your view)
    expunged: set[int] = field(default_factory=set)
    flags: set[int] = field(default_factory=set)  # UIDs whose flags (or MODSEQ) changed
    deleted: bool = False  # the folder itself was deleted
    renamed: str | None = None  # the folder's new name

    def __bool__(self) -> bool:
        return bool(self.appended or self.expunged or self.flags or self.deleted or self.renamed)


class Watcher:
    """One session's subscription to one folder."""

    def __init__(self, hub: "Hub", owner: object) -> None:
        self._hub = hub
        self.owner = owner
        self.pending = Pending()
        self.event = asyncio.Event()

    def _note(self, kind: str, uids: tuple[int, ...], new_name: str | None) -> None:
        p = self.pending
        if kind == "append":
            p.appended = True
        elif kind == "expunge":
            p.expunged.update(uids)
            p.flags.difference_update(uids)
        elif kind == "flags":
            p.flags.update(uids)
        elif kind == "delete":
            p.deleted = True
        elif kind == "rename":
            p.renamed = new_name
        self.event.set()

    def take(self) -> Pending:
        """The changes noted so far (and forget them)."""
        pending, self.pending = self.pending, Pending()
        self.event.clear()
        return pending

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until something is pending; False on timeout."""
        if self.pending:
            return True
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def close(self) -> None:
        self._hub.unwatch(self)


class Hub:
    """The watchers of one folder."""

    def __init__(self) -> None:
        self.watchers: list[Watcher] = []

    def watch(self, owner: object) -> Watcher:
        watcher = Watcher(self, owner)
        self.watchers.append(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        if watcher in self.watchers:
            self.watchers.remove(watcher)

    def publish(self, kind: str, uids: tuple[int, ...] = (), *, origin: object = None,
                new_name: str | None = None) -> None:
        """Tell every watcher except the one whose owner is ``origin`` (a session
        reports its own changes in its own replies).  ``kind`` is ``append``,
        ``expunge``, ``flags``, ``delete`` or ``rename``."""
        for watcher in list(self.watchers):
            if origin is not None and watcher.owner is origin:
                continue
            watcher._note(kind, tuple(uids), new_name)

    def __len__(self) -> int:
        return len(self.watchers)
