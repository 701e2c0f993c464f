"""Quota at SMTP time: the relay refuses a full mailbox at RCPT, and a
message bigger than the room left, instead of accepting mail that would
bounce at delivery.

**Where the relay learns the room left.**  Two ways were possible: ask the
owning mailstore through the queue's synchronous hand-off for every RCPT
(relay → queue → mailstore, two more round trips per recipient, on the path
the relay keeps as short as Postfix's), or read the usage the mailstore
publishes.  correo does the second: the mailstore's side port answers
``GET /quota?below=N`` with the mailboxes that have less than ``N`` octets
of room (:func:`room_document`; ``N`` is the relay's largest message, so a
mailbox with more room can take anything and is not listed: the answer
stays small however many mailboxes there are), and each relay polls it
every few seconds (:class:`QuotaView`).  An RCPT then costs a dictionary
lookup.  The price is a view up to a few seconds old: the mailstore still
checks the quota under the mailbox lock at delivery, so the rare message
that slips through that window bounces as before; and when the mailstore
cannot be asked, the relay does not guess (nothing is refused for quota).

Decisions (pure):

* a mailbox with no room → ``452 4.2.2`` at RCPT (its owner may clean up;
  the sending server keeps trying);
* a message larger than the room left → ``552 5.2.2`` (``452 4.2.2`` when
  ``mailstore.overQuota`` is ``defer``), at RCPT when ``SIZE`` announced
  the size (RFC 1870), else at the end of DATA.
"""
from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable, Iterable

import aiohttp

from .. import logs
from ..directory import Directory, MailboxEntry
from ..wire.replies import Reply

log = logs.get(__name__)

POLL_SECONDS = 5.0
STALE_SECONDS = 60.0  # older than this, the view is not used
HEADER_ALLOWANCE = 2048  # what the relay and the mailstore add on the way (Received:, Return-Path:...)
REASON_FULL = "over_quota"
REASON_SIZE = "over_quota_size"

RoomFor = Callable[[str], "int | None"]


# -- the mailstore's side ----------------------------------------------------------

async def room_document(directory: Directory, used_bytes: Callable[[str], Awaitable[int]], below: int) -> dict:
    """``/quota``: the mailboxes with less than ``below`` octets of room
    (a quota of 0 is no quota: never listed)."""
    tight: dict[str, int] = {}
    for entry in directory:
        if entry.quota_bytes <= 0:
            continue
        room = entry.quota_bytes - await used_bytes(entry.address)
        if room < below:
            tight[entry.address.lower()] = max(room, 0)
    return {"below": below, "mailboxes": tight}


# -- the relay's side --------------------------------------------------------------

class QuotaView:
    """The room left in the mailboxes that are nearly full, as the mailstore
    last said (polled every ``interval`` seconds)."""

    def __init__(self, url: str, below: int, *, interval: float = POLL_SECONDS, stale_after: float = STALE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url.rstrip("/") + f"/quota?below={int(below)}"
        self.interval = interval
        self.stale_after = stale_after
        self.clock = clock
        self.room: dict[str, int] = {}
        self.fetched_at: float | None = None
        self._task: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None
        self._failing = False

    def room_for(self, address: str) -> int | None:
        """Octets left in ``address``'s mailbox; None when it has plenty or
        the view is too old to trust."""
        if self.fetched_at is None or self.clock() - self.fetched_at > self.stale_after:
            return None
        return self.room.get(address.lower())

    async def refresh(self) -> bool:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            async with self._session.get(self.url) as rsp:
                if rsp.status != 200:
                    raise ValueError(f"HTTP {rsp.status}")
                doc = await rsp.json(content_type=None)
            room = {str(k).lower(): int(v) for k, v in (doc.get("mailboxes") or {}).items()}
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError, TypeError, AttributeError) as exc:
            if not self._failing:
                log.warning("quota_view_unavailable", url=self.url, error=str(exc) or type(exc).__name__,
                            effect="no quota refusals at RCPT until the mailstore answers")
            self._failing = True
            return False
        if self._failing:
            log.info("quota_view_restored", url=self.url)
        self._failing = False
        self.room, self.fetched_at = room, self.clock()
        return True

    async def _run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._session is not None:
            await self._session.close()


class QuotaViews:
    """The quota views of every mailstore shard as one: a mailbox lives on one
    shard, and only that shard lists it (its ``/quota`` covers its own
    mailboxes)."""

    def __init__(self, views: Iterable[QuotaView]) -> None:
        self.views = list(views)

    def room_for(self, address: str) -> int | None:
        found = [room for room in (v.room_for(address) for v in self.views) if room is not None]
        return min(found) if found else None

    async def refresh(self) -> bool:
        results = [await v.refresh() for v in self.views]
        return all(results)

    def start(self) -> None:
        for v in self.views:
            v.start()

    async def close(self) -> None:
        for v in self.views:
            await v.close()


def _size_reply(address: str, room: int, over_quota_policy: str) -> Reply:
    text = f"<{address}>: Message is larger than the room left in the mailbox ({room} bytes)"
    if over_quota_policy == "defer":
        return Reply(452, "4.2.2", text + "; try again later", REASON_SIZE)
    return Reply(552, "5.2.2", text, REASON_SIZE)


def rcpt_reply(address: str, mailboxes: Iterable[MailboxEntry], room_for: RoomFor, declared_size: int | None,
               over_quota_policy: str = "reject") -> Reply | None:
    """At RCPT, for the mailboxes mail for ``address`` reaches."""
    for entry in mailboxes:
        room = room_for(entry.address)
        if room is None:
            continue
        if room <= 0:
            return Reply(452, "4.2.2", f"<{address}>: Mailbox is full; try again later", REASON_FULL)
        if declared_size and declared_size + HEADER_ALLOWANCE > room:
            return _size_reply(address, room, over_quota_policy)
    return None


def data_reply(reached: Iterable[tuple[str, list[MailboxEntry]]], room_for: RoomFor, size: int,
               over_quota_policy: str = "reject") -> Reply | None:
    """At the end of DATA: the first recipient whose mailbox has less room
    than the message (``reached``: each recipient and its mailboxes)."""
    for address, mailboxes in reached:
        for entry in mailboxes:
            room = room_for(entry.address)
            if room is not None and size + HEADER_ALLOWANCE > room:
                return _size_reply(address, room, over_quota_policy)
    return None
