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
import queue
import threading
from typing import Any, Callable


class IoPool:
    """The store's own few threads for disk work.  Few on purpose: SQLite
    and file buffers stay in few malloc arenas (the default executor's many
    threads each grow their own and keep the memory), and a burst of
    password checks on the default executor never queues ahead of the disk.

    A plain queue and the loop's own future rather than a
    ``ThreadPoolExecutor``: one hop per write command, and the executor's
    bookkeeping (a concurrent future chained to an asyncio one, a semaphore
    per submit) cost more CPU than the work of a small flag change.  The
    threads are daemons: work that is cut off by the process exiting was
    never acknowledged, which is what a crash would do."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []

    def run(self, fn: Callable[..., Any], *args: Any) -> "asyncio.Future[Any]":
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if not self._workers:
            self._start()
        self._queue.put((loop, fut, fn, args))
        return fut

    def _start(self) -> None:
        for i in range(self.threads):
            t = threading.Thread(target=self._work, name=f"mailstore-io-{i}", daemon=True)
            t.start()
            self._workers.append(t)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            loop, fut, fn, args = item
            try:
                result = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                done, result = _fail, exc
            else:
                done = _done
            try:
                loop.call_soon_threadsafe(done, fut, result)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass
            del item, loop, fut, fn, args, result

    def shutdown(self) -> None:
        """Let the threads finish what is queued, then end."""
        for _ in self._workers:
            self._queue.put(None)
        self._workers = []


def _done(fut: "asyncio.Future[Any]", result: Any) -> None:
    if not fut.cancelled():
        fut.set_result(result)


def _fail(fut: "asyncio.Future[Any]", exc: BaseException) -> None:
    if not fut.cancelled():
        fut.set_exception(exc)


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
