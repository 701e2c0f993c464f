"""The summaries of a folder's messages (:class:`.summary.Summary`), made
once and kept: in memory for the folders used lately, and in the folder's
index (``message_data`` of kind ``imap.summary``, which goes with its
message) for good.  SORT, THREAD and OBJECTID ask here, so a second SORT of
a 10,000-message folder reads no message, and a restart reads them from
the index instead of the files.

Messages without a summary are read in batches on the store's threads
(:meth:`~.backend.Folder.map_messages`: the header is parsed and the
content digested there, off the event loop), then stored.  The memory
cache is bounded (:data:`MAX_SUMMARIES` in all); a folder used least
lately is dropped first.
"""
from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import TYPE_CHECKING, Iterable

from ..message import parse
from .summary import Summary, email_id, summarize

if TYPE_CHECKING:
    from .backend import Folder

KIND = "imap.summary"
BATCH = 500  # messages read per thread call
MAX_SUMMARIES = 60_000  # kept in memory, all folders together
_HEADER_END = (b"\r\n\r\n", b"\n\n")


def summary_of(data: bytes) -> Summary:
    """Thread side: the summary of one message's content."""
    end = len(data)
    for sep in _HEADER_END:
        i = data.find(sep)
        if i >= 0:
            end = min(end, i + len(sep))
    return summarize(parse(data[:end]), email_id(data))


class _Cache:
    def __init__(self) -> None:
        self.items: dict[int, Summary] = {}
        self.loaded = False
        self.lock = asyncio.Lock()


class Summaries:
    """Summaries of many folders, keyed by (storage, folder, UIDVALIDITY)."""

    def __init__(self, max_items: int = MAX_SUMMARIES) -> None:
        self.max_items = max_items
        self._caches: OrderedDict[tuple, _Cache] = OrderedDict()

    def _cache(self, key: tuple) -> _Cache:
        cache = self._caches.get(key)
        if cache is None:
            cache = self._caches[key] = _Cache()
        self._caches.move_to_end(key)
        return cache

    def _bound(self) -> None:
        total = sum(len(c.items) for c in self._caches.values())
        while total > self.max_items and len(self._caches) > 1:
            _, old = self._caches.popitem(last=False)
            total -= len(old.items)

    async def get(self, storage: str, folder: "Folder", uids: Iterable[int]) -> dict[int, Summary]:
        """UID → summary for these messages (expunged ones left out)."""
        wanted = list(uids)
        cache = self._cache((storage, folder.name, folder.uidvalidity))
        async with cache.lock:
            if not cache.loaded:
                for uid, raw in (await folder.message_data(KIND)).items():
                    summary = Summary.load(raw)
                    if summary is not None:
                        cache.items[uid] = summary
                cache.loaded = True
            missing = [u for u in wanted if u not in cache.items]
            for i in range(0, len(missing), BATCH):
                made = await folder.map_messages(missing[i:i + BATCH], summary_of)
                cache.items.update(made)
                await folder.put_message_data(KIND, {u: s.dump() for u, s in made.items()})
            if len(cache.items) > len(folder) + 1000:  # forget expunged messages now and then
                live = set(folder.uids())
                cache.items = {u: s for u, s in cache.items.items() if u in live}
            out = {u: s for u in wanted if (s := cache.items.get(u)) is not None}
        self._bound()
        return out


SUMMARIES = Summaries()
"""The process's summaries (one mailstore process serves a volume)."""
