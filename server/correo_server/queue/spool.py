"""The queue's disk: nothing acknowledged is ever lost.

Layout of the spool folder (``queue.spoolDir``)::

    tmp/                 messages being written (removed at start: never acknowledged)
    msg/<id>             one file per message: a header line, the envelope (JSON),
                         then the message bytes exactly as received
    journal.<gen>        append-only JSON lines: every state change (see records)
    snapshot.json        the state as of the start of journal <gen>
    corrupt/             message files that could not be read (kept for a person)

**Messages** are written to ``tmp/``, fsynced, renamed into ``msg/`` and the
directory is fsynced; only then does :meth:`Spool.store` return (and the LMTP
listener answer 250).  The bytes of a message just stored stay in memory
(within a budget) for its first delivery attempt, so that the runner does not
read back what it has just written; later attempts read the file.

**Disk work is batched** (:class:`DiskWork`): one worker-thread call does all
that was asked for since the previous call: new message files (each written
and fsynced, renamed, then one fsync of ``msg/`` for all), journal events
(one write and fsync), and unlinks of finished messages.  Each caller resumes
once the call holding its work is done, so nobody hears 250 before its own
message and folder were fsynced.  A thread hand-off costs more CPU than a
small write or an unlink, hence one for everything rather than one each.

**State changes** go to the journal: :meth:`Journal.append` queues events and
returns a future that completes once they are on disk (one write + fsync for
everything queued meanwhile: group commit, in the batches above).  When the
journal grows past a limit (and at every start) it is *compacted*: the state
is written to ``snapshot.json`` (temp file, fsync, rename, directory fsync)
and a new journal generation begins.  A crash at any point leaves either the old snapshot and
its journals or the new ones, and recovery replays every journal from the
snapshot's generation on.  Before a snapshot is written the ``msg/`` folder is
fsynced, so that a message the snapshot no longer lists is really gone (else it
would come back as new and be delivered twice).
"""
from __future__ import annotations

import asyncio
import errno
import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import logs
from ..osutil import fsync_dir
from .records import Envelope

log = logs.get(__name__)

MAGIC = b"CORREO-QUEUE 1\n"
SNAPSHOT = "snapshot.json"
JOURNAL_PREFIX = "journal."
COMPACT_BYTES = 8 * 1024 * 1024
FRESH_BYTES = 32 * 1024 * 1024  # messages kept in memory for their first attempt, at most


class SpoolFull(OSError):
    """Not enough free space to accept a message (452 4.3.1)."""




class DiskWork:
    """The spool's disk work in batches: each worker-thread call performs, in
    this order, everything asked for since the previous call:

    1. new message files (:meth:`Spool.store`): written, each fsynced,
       renamed into ``msg/``, then ``msg/`` fsynced once;
    2. journal events (:meth:`Journal.append`): appended and fsynced;
    3. finished message files (:meth:`Spool.discard`): unlinked (their final
       events were committed by an earlier call, before discard was asked).

    A failed journal write is retried (first thing in a later call, a second
    later); nothing waiting on those events proceeds meanwhile."""

    def __init__(self, spool: "Spool") -> None:
        self.spool = spool
        self._writes: list[tuple[tuple[Envelope, bytes], asyncio.Future]] = []
        self._unlinks: list[tuple[str, asyncio.Future]] = []
        self._task: asyncio.Task | None = None
        self.calls = 0  # worker-thread calls made (for tests and curiosity)

    def kick(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="spool-disk")

    async def write(self, env: Envelope, data: bytes) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._writes.append(((env, data), fut))
        self.kick()
        await asyncio.shield(fut)

    async def unlink(self, msg_id: str) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._unlinks.append((msg_id, fut))
        self.kick()
        await asyncio.shield(fut)

    async def drain(self) -> None:
        """Wait until nothing is pending."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    def _journal_pending(self) -> bool:
        journal = self.spool.journal
        return journal is not None and journal.pending()

    async def _run(self) -> None:
        while self._writes or self._unlinks or self._journal_pending():
            await asyncio.sleep(0)  # what else this turn of the event loop asks for comes along
            writes, self._writes = self._writes, []
            unlinks, self._unlinks = self._unlinks, []
            journal = self.spool.journal
            batch = journal.take() if journal is not None and journal.pending() else None
            spool = self.spool

            def work() -> tuple[list[BaseException | None], OSError | None, list[BaseException | None]]:
                written = spool._write_batch([item for item, _ in writes]) if writes else []
                failed = None
                if batch is not None:
                    assert journal is not None
                    try:
                        journal._write(batch.data)
                    except OSError as exc:
                        failed = exc
                unlinked = spool._unlink_batch([item for item, _ in unlinks]) if unlinks else []
                return written, failed, unlinked

            try:
                written, failed, unlinked = await asyncio.to_thread(work)
            except BaseException as exc:  # a bug, or cancelled at shutdown: nobody may wait forever
                error = exc if isinstance(exc, Exception) else OSError(errno.EIO, "spool stopped")
                for _, fut in writes + unlinks:
                    _settle(fut, error)
                if batch is not None:
                    assert journal is not None
                    journal.give_back(batch)
                if not isinstance(exc, Exception):
                    raise
                log.error("spool_disk_work_failed", error=repr(exc))
                await asyncio.sleep(1.0)
                continue
            self.calls += 1
            for (_, fut), result in zip(writes, written):
                _settle(fut, result)
            for (_, fut), result in zip(unlinks, unlinked):
                _settle(fut, result)
            if batch is not None:
                assert journal is not None
                if failed is None:
                    await journal.committed(batch)
                else:
                    # Nothing waiting on these events may proceed; keep trying.
                    log.error("journal_write_failed", error=str(failed))
                    journal.give_back(batch)
                    await asyncio.sleep(1.0)


def _settle(fut: asyncio.Future, result: BaseException | None) -> None:
    if fut.done():
        return
    if result is None:
        fut.set_result(None)
    else:
        fut.set_exception(result)
        fut.exception()  # marked retrieved even if the waiter went away


_compact_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # made once, not per call


def encode_message(env: Envelope, data: bytes) -> bytes:
    return MAGIC + _compact_json(env.to_json()).encode() + b"\n" + data


def decode_message(blob: bytes) -> tuple[Envelope, bytes]:
    if not blob.startswith(MAGIC):
        raise ValueError("not a correo queue file")
    header, sep, data = blob[len(MAGIC):].partition(b"\n")
    if not sep:
        raise ValueError("truncated queue file")
    return Envelope.from_json(json.loads(header)), data


@dataclass
class _Batch:
    """Journal events on their way to disk, and who waits for them."""

    data: bytes
    waiters: list[asyncio.Future]
    snapshot: bytes | None  # the state to compact to after writing, if due


@dataclass
class Recovered:
    """What :meth:`Spool.recover` found on disk."""

    snapshot: dict[str, Any] | None
    envelopes: dict[str, Envelope]
    events: list[dict]
    torn: int = 0  # unreadable journal lines skipped (a write cut by the crash)
    cleaned: int = 0  # half-written temp files removed
    corrupt: list[str] = field(default_factory=list)


class Spool:
    def __init__(self, root: str | os.PathLike[str], *, min_free_bytes: int = 0,
                 fresh_bytes: int = FRESH_BYTES) -> None:
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.msg = self.root / "msg"
        self.min_free_bytes = min_free_bytes
        self.journal: Journal | None = None
        self._counter = secrets.randbelow(0x1000)
        self.disk = DiskWork(self)
        self._fresh: dict[str, bytes] = {}  # just stored, not yet read for delivery
        self._fresh_bytes = 0
        self._fresh_limit = fresh_bytes

    # -- messages ---------------------------------------------------------
    def new_id(self, now: float) -> str:
        """Queue ids sort by arrival: milliseconds in hex, then a counter of
        this process and randomness (unique across restarts and processes)."""
        while True:
            self._counter = (self._counter + 1) & 0xFFF
            qid = f"{int(now * 1000):011X}{self._counter:03X}{secrets.token_hex(2).upper()[:3]}"
            if not os.path.exists(os.path.join(self.msg, qid)):
                return qid

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def has_room(self, size: int = 0) -> bool:
        try:
            return self.free_bytes() - size >= self.min_free_bytes
        except OSError:
            return False

    def _write_batch(self, items: list[tuple[Envelope, bytes]]) -> list[BaseException | None]:
        """Write, fsync and rename every message, then fsync ``msg/`` once
        (blocking).  One result per message; a failed one leaves nothing in
        ``tmp/`` or ``msg/``."""
        results: list[BaseException | None] = [None] * len(items)
        open_fds: list[tuple[int, int]] = []  # (index, fd)

        def fail(i: int, exc: BaseException) -> None:
            results[i] = exc
            try:
                (self.tmp / items[i][0].id).unlink()
            except OSError:
                pass

        try:
            for i, (env, data) in enumerate(items):
                try:
                    fd = os.open(self.tmp / env.id, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except OSError as exc:
                    results[i] = exc
                    continue
                open_fds.append((i, fd))
                try:
                    view = memoryview(encode_message(env, data))
                    while view:
                        view = view[os.write(fd, view):]
                except OSError as exc:
                    fail(i, exc)
            for i, fd in open_fds:
                if results[i] is None:
                    try:
                        os.fsync(fd)
                    except OSError as exc:
                        fail(i, exc)
        finally:
            for _, fd in open_fds:
                os.close(fd)
        renamed = []
        for i, (env, _data) in enumerate(items):
            if results[i] is None:
                try:
                    os.rename(self.tmp / env.id, self.msg / env.id)
                    renamed.append(i)
                except OSError as exc:
                    fail(i, exc)
        if renamed:
            try:
                fsync_dir(self.msg)
            except OSError as exc:
                # In msg/ but not known durable: not acknowledged (a restart
                # would deliver it: a second copy at worst, never a loss).
                for i in renamed:
                    results[i] = exc
        return results

    async def store(self, env: Envelope, data: bytes) -> None:
        """Write a message durably; raises :class:`SpoolFull` or ``OSError``."""
        if not self.has_room(len(data)):
            raise SpoolFull(errno.ENOSPC, "spool free space below the minimum")
        await self.disk.write(env, data)
        if self._fresh_bytes + len(data) <= self._fresh_limit:
            self._fresh[env.id] = data
            self._fresh_bytes += len(data)

    def _forget(self, msg_id: str) -> bytes | None:
        data = self._fresh.pop(msg_id, None)
        if data is not None:
            self._fresh_bytes -= len(data)
        return data

    def exists(self, msg_id: str) -> bool:
        return (self.msg / msg_id).exists()

    def _read(self, msg_id: str) -> tuple[Envelope, bytes]:
        return decode_message((self.msg / msg_id).read_bytes())

    async def read(self, msg_id: str) -> bytes:
        """The message bytes (FileNotFoundError when it was deleted): from
        memory for the first read after :meth:`store`, else from the file."""
        data = self._forget(msg_id)
        if data is not None:
            return data
        _env, data = await asyncio.to_thread(self._read, msg_id)
        return data

    def remove(self, msg_id: str) -> None:
        """Unlink a message file (blocking)."""
        self._forget(msg_id)
        try:
            (self.msg / msg_id).unlink()
        except FileNotFoundError:
            pass

    def _unlink_batch(self, ids: list[str]) -> list[BaseException | None]:
        results: list[BaseException | None] = []
        for msg_id in ids:
            try:
                (self.msg / msg_id).unlink()
                results.append(None)
            except FileNotFoundError:
                results.append(None)
            except OSError as exc:
                results.append(exc)
        return results

    async def discard(self, msg_id: str) -> None:
        """Unlink a finished message's file, batched with others (no fsync:
        a compaction fsyncs ``msg/`` before it forgets a message)."""
        self._forget(msg_id)
        await self.disk.unlink(msg_id)

    # -- recovery ---------------------------------------------------------
    def recover(self) -> Recovered:
        """Read what is on disk (blocking; called once at start)."""
        for d in (self.root, self.tmp, self.msg):
            d.mkdir(parents=True, exist_ok=True)
        cleaned = 0
        for leftover in self.tmp.iterdir():
            leftover.unlink(missing_ok=True)
            cleaned += 1
        snapshot = None
        snap_path = self.root / SNAPSHOT
        if snap_path.exists():
            snapshot = json.loads(snap_path.read_text(encoding="utf-8"))
        gen = int(snapshot["gen"]) if snapshot else 0
        envelopes: dict[str, Envelope] = {}
        corrupt: list[str] = []
        for path in sorted(self.msg.iterdir()):
            try:
                with open(path, "rb") as fh:
                    head = fh.read(len(MAGIC))
                    line = fh.readline()
                if head != MAGIC or not line.endswith(b"\n"):
                    raise ValueError("bad header")
                env = Envelope.from_json(json.loads(line))
                if env.id != path.name:
                    raise ValueError("id does not match the file name")
                envelopes[env.id] = env
            except (ValueError, KeyError, TypeError, OSError) as exc:
                (self.root / "corrupt").mkdir(exist_ok=True)
                os.replace(path, self.root / "corrupt" / path.name)
                corrupt.append(path.name)
                log.error("spool_file_corrupt", file=path.name, error=str(exc))
        events: list[dict] = []
        torn = 0
        for jgen, path in self.journals():
            if jgen < gen:
                path.unlink(missing_ok=True)  # compacted into the snapshot already
                continue
            with open(path, "rb") as fh:
                for raw in fh:
                    try:
                        ev = json.loads(raw)
                        if not isinstance(ev, dict) or "e" not in ev or "id" not in ev:
                            raise ValueError
                        events.append(ev)
                    except ValueError:
                        torn += 1
        return Recovered(snapshot, envelopes, events, torn, cleaned, corrupt)

    def journals(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.root.glob(JOURNAL_PREFIX + "*"):
            suffix = path.name[len(JOURNAL_PREFIX):]
            if suffix.isdigit():
                found.append((int(suffix), path))
        return sorted(found)

    def open_journal(self, snapshot_fn: Callable[[], dict], *, compact_bytes: int = COMPACT_BYTES) -> "Journal":
        """Start a fresh journal generation after a snapshot of the recovered
        state (blocking; called once at start, after :meth:`recover`)."""
        gens = [g for g, _ in self.journals()]
        snap_gen = 0
        if (self.root / SNAPSHOT).exists():
            snap_gen = int(json.loads((self.root / SNAPSHOT).read_text(encoding="utf-8"))["gen"])
        journal = Journal(self, max([snap_gen, *gens], default=0), snapshot_fn, compact_bytes)
        journal.compact_now(json.dumps(snapshot_fn(), separators=(",", ":")).encode())
        self.journal = journal
        return journal


class Journal:
    """Append-only log of state changes with group commit and compaction."""

    def __init__(self, spool: Spool, gen: int, snapshot_fn: Callable[[], dict], compact_bytes: int) -> None:
        self.spool = spool
        self.gen = gen
        self._snapshot_fn = snapshot_fn
        self._compact_bytes = compact_bytes
        self._fd: int | None = None
        self._size = 0
        self._buf: list[bytes] = []
        self._waiters: list[asyncio.Future] = []
        self._retry: _Batch | None = None  # a write that failed, first in line
        self._closed = False
        self.flushes = 0

    def _path(self, gen: int) -> Path:
        return self.spool.root / f"{JOURNAL_PREFIX}{gen:08d}"

    def compact_now(self, snapshot: bytes) -> None:
        """Write ``snapshot`` as the state at the start of a new generation,
        then drop older journals (blocking).

        Until the snapshot's rename, the old generation stays the truth (its
        journal keeps every event); from the rename on, the new one is, and
        appends go to the new journal at once.  Old journals are deleted only
        after the rename is durable."""
        root = self.spool.root
        fsync_dir(self.spool.msg)  # unlinks of finished messages are durable first
        new_gen = self.gen + 1
        fd = os.open(self._path(new_gen), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.ftruncate(fd, 0)  # left over from an earlier attempt that failed
            fsync_dir(root)
            tmp = root / (SNAPSHOT + ".tmp")
            doc = b'{"version":1,"gen":%d,"state":' % new_gen + snapshot + b"}"
            with open(tmp, "wb") as fh:
                fh.write(doc)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, root / SNAPSHOT)
        except BaseException:
            os.close(fd)
            raise
        old_fd, self._fd, self.gen, self._size = self._fd, fd, new_gen, 0
        if old_fd is not None:
            os.close(old_fd)
        fsync_dir(root)
        for g, path in self.spool.journals():
            if g < new_gen:
                path.unlink(missing_ok=True)

    def append(self, events: list[dict]) -> asyncio.Future:
        """Queue events; the future completes when they are durable."""
        fut = asyncio.get_running_loop().create_future()
        if self._closed:
            fut.set_exception(RuntimeError("journal closed"))
            return fut
        for ev in events:
            self._buf.append(_compact_json(ev).encode() + b"\n")
        self._waiters.append(fut)
        self.spool.disk.kick()
        return fut

    # -- what DiskWork calls ----------------------------------------------------
    def pending(self) -> bool:
        return self._retry is not None or bool(self._waiters)

    def take(self) -> "_Batch":
        """The events to write next (a failed batch first)."""
        if self._retry is not None:
            batch, self._retry = self._retry, None
            return batch
        data, waiters = b"".join(self._buf), self._waiters
        self._buf, self._waiters = [], []
        snapshot = None
        if self._size + len(data) > self._compact_bytes:
            # Taken in the same step as the buffer: it holds exactly the
            # events up to here (events are applied when appended).
            snapshot = json.dumps(self._snapshot_fn(), separators=(",", ":")).encode()
        return _Batch(data, waiters, snapshot)

    def give_back(self, batch: "_Batch") -> None:
        """A batch that was not written: it goes first next time (without its
        snapshot, which newer events would make stale)."""
        self._retry = _Batch(batch.data, batch.waiters, None)

    async def committed(self, batch: "_Batch") -> None:
        self._size += len(batch.data)
        if batch.snapshot is not None:
            try:
                await asyncio.to_thread(self.compact_now, batch.snapshot)
            except OSError as exc:  # the journal goes on growing; next time perhaps
                log.error("journal_compaction_failed", error=str(exc))
        self.flushes += 1
        for fut in batch.waiters:
            if not fut.done():
                fut.set_result(None)

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except OSError:
            # Cut what a failed write left (disk full...) so that the retry
            # does not leave half a line or events written twice.
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                pass
            raise

    async def close(self) -> None:
        self._closed = True
        await self.spool.disk.drain()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
