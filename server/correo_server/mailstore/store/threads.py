"""The store's worker threads, and its one rule about them.

Blocking work (message files, fsync, SQLite) runs on the store's own few
threads (:class:`IoPool`).  Everything a session can see — a folder's view of
its messages and counters, a mailbox's usage, subscriptions and last
delivery — changes **only on the event loop**.  So a function run on a worker
computes and *returns* what changed, from the snapshot it was given, and
never assigns to the view; the caller applies the result with
:func:`finish` on the loop, right after the thread's work, even when the
task that asked was cancelled meanwhile (the mailbox lock it holds is
released only after that).  What the workers do own is the disk side of
each folder (:class:`~.disk.FolderDisk`: the index handle, the keyword
letters, the counters the index holds), which the loop reads only while it
holds the mailbox lock and no worker runs.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable


class IoPool:
    """The store's own few threads for disk work.  Few on purpose: SQLite
    and file buffers stay in few malloc arenas (the default executor's many
    threads each grow their own and keep the memory), and a burst of
    password checks on the default executor never queues ahead of the disk."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._executor: ThreadPoolExecutor | None = None

    def run(self, fn: Callable[..., Any], *args: Any) -> "asyncio.Future[Any]":
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="mailstore-io")
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None


async def finish(fut: "asyncio.Future[Any]", apply: Callable[[Any], None] | None = None) -> Any:
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
