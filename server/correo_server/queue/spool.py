"""The queue's disk: nothing acknowledged is ever lost.

Layout of the spool folder (``queue.spoolDir``)::

    data.<seq>           segments: messages appended one after the other, each
                         a record (a header line, the envelope as JSON, the
                         message bytes exactly as received, a CRC)
    journal.<gen>        append-only JSON lines: every state change (see records)
    snapshot.json        the state as of the start of journal <gen>, and which
                         records of the segments are live
    corrupt/             what could not be read (kept for a person)
    msg/, tmp/           one file per message, as correo spooled before it had
                         segments: still read, never written

**Messages** are appended to the current segment; one worker-thread call
appends every message that arrived since the previous call and
``fdatasync``\\s the segment once (a new segment's folder entry is fsynced
too); only then does :meth:`Spool.store` return (and the LMTP listener
answer 250).  No file is created or removed per message: on this kind of
disk, creating, fsyncing, renaming and unlinking a file per message cost
about 0.5 ms of CPU per message, appending to a group-committed segment a
few microseconds (``bench/smtp_ingest.py``).  The bytes of a message just
stored stay in memory (within a budget) for its first delivery attempt;
later attempts read them back from the segment.

A segment is deleted once none of its messages is live and it is no longer
the one being appended to (past ``SEGMENT_BYTES``, or empty of live mail
past ``SMALL_SEGMENT_BYTES``).  A message deferred for days would keep its
whole segment: at each compaction, live records of segments that are mostly
dead are copied, byte for byte, to the end of the current one, and the old
segment goes.

**Disk work is batched** (:class:`DiskWork`): one worker-thread call does all
that was asked for since the previous call: new messages (appended, one
``fdatasync``), journal events (one write and fsync), and deletions of
segments (and of old ``msg/`` files).  Each caller resumes once the call
holding its work is done, so nobody hears 250 before its own message was
on disk.  A thread hand-off costs more CPU than a small write, hence one
for everything rather than one each, on the spool's own thread
(:class:`_DiskThread`: a queue and ``call_soon_threadsafe``, not the
executor's concurrent future chained to an asyncio one).

**State changes** go to the journal: :meth:`Journal.append` queues events and
returns a future that completes once they are on disk (group commit, in the
batches above).  When the journal grows past a limit (and at every start) it
is *compacted*: the state is written to ``snapshot.json`` (temp file, fsync,
rename, directory fsync) and a new journal generation begins.  A crash at
any point leaves either the old snapshot and its journals or the new ones,
and recovery replays every journal from the snapshot's generation on.

**Which records are live** after a crash: the snapshot names the live
records that are before the append position it was taken at (its
``tail``); every complete record after the tail is a message that arrived
since, live unless the journal's events finished it.  So a finished
message never comes back (its record is before the tail and not named),
whether or not its segment was deleted yet; and a record cut by the crash
(short, or failing its CRC) was never acknowledged and is dropped.
"""
from __future__ import annotations

import asyncio
import errno
import json
import os
import queue
import secrets
import shutil
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import logs
from ..osutil import can_sync_filesystem, fsync_dir, sync_filesystem
from .records import Envelope

log = logs.get(__name__)

MAGIC = b"CORREO-QUEUE 1\n"  # an old msg/ file
RECORD = b"CORREO-MSG 1 "  # a record in a segment: RECORD <envelope octets> <message octets> <crc32>\n
SEGMENT_PREFIX = "data."
SEGMENT_BYTES = 16 * 1024 * 1024  # a new segment is started past this
SMALL_SEGMENT_BYTES = 1024 * 1024  # ...or past this when nothing in it is live any more
SNAPSHOT = "snapshot.json"
JOURNAL_PREFIX = "journal."
COMPACT_BYTES = 8 * 1024 * 1024
FRESH_BYTES = 32 * 1024 * 1024  # messages kept in memory for their first attempt, at most
FREE_READING_SECONDS = 1.0  # a free-space reading answers has_room this long...
FREE_SLACK_BYTES = 256 * 1024 * 1024  # ...while this much more than the minimum is left


class SpoolFull(OSError):
    """Not enough free space to accept a message (452 4.3.1)."""


@dataclass(frozen=True, slots=True)
class Loc:
    """Where a message's record is: segment, the record's first octet, its
    message bytes (offset and length).  ``seg`` -1: an old ``msg/`` file."""

    seg: int
    start: int
    at: int = 0
    size: int = 0
    end: int = 0  # the octet after the record


def encode_record(env: Envelope, data: bytes) -> bytes:
    header = _compact_json(env.to_json()).encode()
    crc = zlib.crc32(data, zlib.crc32(header))
    return b"%s%d %d %08x\n%s%s\n" % (RECORD, len(header), len(data), crc, header, data)


def _parse_records(blob: bytes) -> tuple[list[tuple[Envelope, int, int, int, int]], int, str | None]:
    """The complete records of a segment: (envelope, start, data offset,
    data length, end); where the readable part ends; and what is wrong
    after it (None: nothing, the segment ends cleanly)."""
    out = []
    pos = 0
    while pos < len(blob):
        nl = blob.find(b"\n", pos, pos + 80)
        if nl < 0 or not blob.startswith(RECORD, pos):
            return out, pos, "not a record" if nl >= 0 or len(blob) - pos >= 80 else "cut short"
        try:
            hlen, dlen, crc = blob[pos + len(RECORD):nl].split(b" ")
            hlen_i, dlen_i, crc_i = int(hlen), int(dlen), int(crc, 16)
        except ValueError:
            return out, pos, "bad record header"
        at = nl + 1 + hlen_i
        end = at + dlen_i + 1
        if end > len(blob):
            return out, pos, "cut short"
        header, data = blob[nl + 1:at], blob[at:at + dlen_i]
        if blob[end - 1:end] != b"\n" or zlib.crc32(data, zlib.crc32(header)) != crc_i:
            return out, pos, "checksum mismatch"
        try:
            env = Envelope.from_json(json.loads(header))
        except (ValueError, KeyError, TypeError):
            return out, pos, "bad envelope"
        out.append((env, pos, at, dlen_i, end))
        pos = end
    return out, pos, None


class _DiskThread:
    """The thread that does a spool's disk batches, one at a time; it ends
    after :data:`IDLE_SECONDS` without work (and starts again when asked)."""

    IDLE_SECONDS = 10.0

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running = False

    def run(self, fn: Callable[[], Any]) -> asyncio.Future:
        """``fn()`` on the thread; the future has its result (or exception)."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self._lock:
            self._queue.put((loop, fut, fn))
            if not self._running:
                self._running = True
                threading.Thread(target=self._work, name="queue-spool-disk", daemon=True).start()
        return fut

    def _work(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self.IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._running = False
                        return
                continue
            loop, fut, fn = item
            try:
                result, done = fn(), _thread_result
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                result, done = exc, _thread_exception
            try:
                loop.call_soon_threadsafe(done, fut, result)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass
            del item, loop, fut, fn, result


def _thread_result(fut: asyncio.Future, result: Any) -> None:
    if not fut.done():
        fut.set_result(result)


def _thread_exception(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


class DiskWork:
    """The spool's disk work in batches: each worker-thread call performs, in
    this order, everything asked for since the previous call:

    1. new messages (:meth:`Spool.store`): appended to the current segment,
       which is then fdatasynced (records copied out of sparse segments go
       along);
    2. journal events (:meth:`Journal.append`): appended and fsynced;
    3. segments without live messages (and old ``msg/`` files of finished
       messages): deleted (their final events were committed by an earlier
       call, before they were discarded).

    A failed journal write is retried (first thing in a later call, a second
    later); nothing waiting on those events proceeds meanwhile."""

    def __init__(self, spool: "Spool") -> None:
        self.spool = spool
        self._writes: list[tuple[tuple[Envelope, bytes], asyncio.Future]] = []
        self._unlinks: list[tuple[str, asyncio.Future]] = []
        self._task: asyncio.Task | None = None
        self._thread = _DiskThread()
        self.calls = 0  # worker-thread calls made (for tests and curiosity)

    def kick(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="spool-disk")

    async def write(self, env: Envelope, data: bytes) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._writes.append(((env, data), fut))
        self.kick()
        await fut  # (a caller cancelled meanwhile leaves it cancelled: the batch skips it)

    async def unlink(self, name: str) -> None:
        """Delete a segment (``data.<seq>``) or an old ``msg/<id>`` file."""
        fut = asyncio.get_running_loop().create_future()
        self._unlinks.append((name, fut))
        self.kick()
        await fut

    async def drain(self) -> None:
        """Wait until nothing is pending."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    def _journal_pending(self) -> bool:
        journal = self.spool.journal
        return journal is not None and journal.pending()

    async def _run(self) -> None:
        spool = self.spool
        while self._writes or self._unlinks or self._journal_pending() or spool._relocate_due or spool._due:
            await asyncio.sleep(0)  # what else this turn of the event loop asks for comes along
            writes, self._writes = self._writes, []
            unlinks, self._unlinks = self._unlinks, []
            due, spool._due = spool._due, []
            journal = spool.journal
            batch = journal.take() if journal is not None and journal.pending() else None
            roll = spool._should_roll()
            moves = spool._take_relocations()

            def work() -> tuple[list[Loc | BaseException], list[Loc] | BaseException, OSError | None,
                                list[BaseException | None]]:
                items = [item for item, _ in writes]
                # Records and events both: written, then one syncfs for the
                # two files (one journal commit and disk flush, not two).
                together = (bool(items or moves) and batch is not None and spool._sync_fd is not None)
                mark = spool._writer_mark()
                written, moved = spool._append(items, moves, roll, sync=not together)
                failed = None
                if batch is not None:
                    assert journal is not None
                    try:
                        journal._write(batch.data, sync=not together)
                    except OSError as exc:
                        failed = exc
                if together:
                    try:
                        spool._sync_all()
                    except OSError as exc:  # nothing of this call is known to be on disk: undone
                        written, moved = spool._undo_append(mark, items, exc)
                        if failed is None:
                            assert journal is not None and batch is not None
                            journal._undo()
                            failed = exc
                unlinked = spool._unlink_batch([name for name, _ in unlinks] + due) if unlinks or due else []
                return written, moved, failed, unlinked[:len(unlinks)]

            try:
                written, moved, failed, unlinked = await self._thread.run(work)
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
            spool._stored([item for item, _ in writes], written)
            spool._moved(moves, moved)
            for (_, fut), result in zip(writes, written):
                _settle(fut, result if isinstance(result, BaseException) else None)
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
    """An old ``msg/`` file (read at recovery; correo no longer writes them)."""
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
    cleaned: int = 0  # half-written temp files removed, cut records dropped
    corrupt: list[str] = field(default_factory=list)


@dataclass
class _Segment:
    """Loop side: what is live in a segment."""

    size: int = 0
    live: int = 0  # live records
    live_bytes: int = 0


class _Writer:
    """Worker side: the segment being appended to."""

    def __init__(self) -> None:
        self.seq = 0
        self.fd: int | None = None
        self.size = 0


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
        self.locs: dict[str, Loc] = {}  # every live message
        self.segments: dict[int, _Segment] = {}
        self.current = 0  # the segment appended to (0: none yet)
        self._writer = _Writer()
        self._relocate: list[tuple[str, Loc]] = []  # live records to copy out of sparse segments
        self._relocate_due = False
        self._due: list[str] = []  # segments and old msg/ files to delete with the next disk batch
        self._sync_fd: int | None = None  # the spool folder, for syncfs (open_journal opens it)
        self._free_seen: tuple[float, int] | None = None  # (when, free octets) of the last statvfs
        self._stored_since = 0  # octets stored since that reading

    # -- segments ---------------------------------------------------------
    def segment_path(self, seq: int) -> Path:
        return self.root / f"{SEGMENT_PREFIX}{seq:08d}"

    def segment_files(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.root.glob(SEGMENT_PREFIX + "*"):
            suffix = path.name[len(SEGMENT_PREFIX):]
            if suffix.isdigit():
                found.append((int(suffix), path))
        return sorted(found)

    def tail(self) -> tuple[int, int]:
        """Where the next record goes (as the loop knows it: between batches)."""
        return self.current, self.segments[self.current].size if self.current in self.segments else 0

    def spool_snapshot(self) -> dict[str, Any]:
        """What the snapshot says about records: the tail, and the live ones before it."""
        return {"tail": list(self.tail()),
                "live": {mid: [loc.seg, loc.start] for mid, loc in self.locs.items() if loc.seg > 0}}

    def _should_roll(self) -> bool:
        seg = self.segments.get(self.current)
        if seg is None:
            return True
        return seg.size >= SEGMENT_BYTES or (seg.live == 0 and seg.size >= SMALL_SEGMENT_BYTES)

    def _append(self, items: list[tuple[Envelope, bytes]], moves: list[tuple[str, Loc]], roll: bool,
                sync: bool = True) -> tuple[list[Loc | BaseException], list[Loc] | BaseException]:
        """Worker: append the new messages (and the records being moved) to
        the current segment (a new one when ``roll``), then fdatasync it.
        One result per message, one location per moved record; when the
        append fails, nothing of it stays (the segment is cut back)."""
        if not items and not moves:
            return [], []
        w = self._writer
        try:
            if roll or w.fd is None:
                self._new_segment()
            parts: list[bytes] = []
            locs: list[Loc] = []
            pos = w.size
            for env, data in items:
                record = encode_record(env, data)
                locs.append(Loc(w.seq, pos, pos + len(record) - len(data) - 1, len(data), pos + len(record)))
                parts.append(record)
                pos += len(record)
            moved: list[Loc] = []
            for _mid, old in moves:
                record = self._read_range(old.seg, old.start, old.end - old.start)
                moved.append(Loc(w.seq, pos, pos + (old.at - old.start), old.size, pos + len(record)))
                parts.append(record)
                pos += len(record)
            self._write_all(b"".join(parts), sync)
        except OSError as exc:
            return [exc] * len(items), exc
        return list(locs), moved

    def _writer_mark(self) -> tuple[int | None, int, int]:
        w = self._writer
        return w.fd, w.seq, w.size

    def _undo_append(self, mark: tuple[int | None, int, int], items: list, exc: OSError
                     ) -> tuple[list[Loc | BaseException], BaseException]:
        """Worker: an append whose sync failed is cut off again (a segment
        started for it stays, empty); when it cannot be cut, appends go on
        in a new segment (recovery drops a cut end, never reads past it)."""
        w = self._writer
        fd, seq, size = mark
        if w.fd is not None:
            cut_to = size if (w.seq == seq and w.fd == fd) else 0
            try:
                os.ftruncate(w.fd, cut_to)
                w.size = cut_to
            except OSError:
                os.close(w.fd)
                w.fd = None
        return [exc] * len(items), exc

    def _sync_all(self) -> None:
        """Worker: syncfs on the spool's file system (errors of any write
        since the last call are reported: Linux 5.8 and later)."""
        assert self._sync_fd is not None
        sync_filesystem(self._sync_fd)

    def _new_segment(self) -> None:
        w = self._writer
        if w.fd is not None:
            os.close(w.fd)
            w.fd = None
        seq = max([w.seq, *(s for s, _ in self.segment_files())], default=0) + 1
        fd = os.open(self.segment_path(seq), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            fsync_dir(self.root)
        except OSError:
            os.close(fd)
            os.unlink(self.segment_path(seq))
            raise
        w.seq, w.fd, w.size = seq, fd, 0

    def _write_all(self, blob: bytes, sync: bool = True) -> None:
        w = self._writer
        assert w.fd is not None
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(w.fd, view):]
            if sync:
                os.fdatasync(w.fd)
        except OSError:
            # Cut what a failed write left (disk full...): no half record stays.
            try:
                os.ftruncate(w.fd, w.size)
            except OSError:
                # The half record stays: nothing may be appended after it
                # (recovery would stop there), so the next append starts a
                # new segment, and recovery drops this cut end.
                os.close(w.fd)
                w.fd = None
            raise
        w.size += len(blob)

    def _read_range(self, seq: int, offset: int, length: int) -> bytes:
        fd = os.open(self.segment_path(seq), os.O_RDONLY)
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def _stored(self, items: list[tuple[Envelope, bytes]], results: list[Loc | BaseException]) -> None:
        """Loop: what the worker appended is live now."""
        w = self._writer
        if w.seq and w.seq != self.current:
            old, self.current = self.current, w.seq
            self.segments.setdefault(w.seq, _Segment())
            gone = self.segments.get(old)
            if gone is not None and gone.live <= 0:  # rolled over: the old one had nothing live left
                del self.segments[old]
                self._due.append(f"{SEGMENT_PREFIX}{old:08d}")
        if w.seq in self.segments:
            self.segments[w.seq].size = w.size
        for (env, data), loc in zip(items, results):
            if isinstance(loc, Loc):
                self._add(env.id, loc)
                if self._fresh_bytes + len(data) <= self._fresh_limit:
                    self._fresh[env.id] = data
                    self._fresh_bytes += len(data)

    def _add(self, mid: str, loc: Loc) -> None:
        self._drop_loc(mid)
        self.locs[mid] = loc
        if loc.seg > 0:
            seg = self.segments.setdefault(loc.seg, _Segment())
            seg.live += 1
            seg.live_bytes += loc.end - loc.start

    def _drop_loc(self, mid: str) -> Loc | None:
        """Loop: a message is no longer live; a segment left without live
        records (and not appended to) is deleted."""
        loc = self.locs.pop(mid, None)
        if loc is not None and loc.seg > 0:
            seg = self.segments.get(loc.seg)
            if seg is not None:
                seg.live -= 1
                seg.live_bytes -= loc.end - loc.start
                if seg.live <= 0 and loc.seg != self.current:
                    del self.segments[loc.seg]
                    self._due.append(f"{SEGMENT_PREFIX}{loc.seg:08d}")
        elif loc is not None:
            self._due.append(f"msg/{mid}")
        return loc

    def _take_relocations(self) -> list[tuple[str, Loc]]:
        moves, self._relocate, self._relocate_due = self._relocate, [], False
        return [(mid, loc) for mid, loc in moves if self.locs.get(mid) is loc]

    def _moved(self, moves: list[tuple[str, Loc]], moved: list[Loc] | BaseException) -> None:
        if isinstance(moved, BaseException):
            if moves:
                log.warning("spool_relocation_failed", error=str(moved), records=len(moves))
            return
        for (mid, old), loc in zip(moves, moved):
            if self.locs.get(mid) is old:  # not finished meanwhile
                self._add(mid, loc)

    def plan_relocations(self) -> None:
        """At a compaction: live records of segments that are mostly dead
        are copied to the current segment by the next disk batch, so that
        the old segment can go."""
        sparse = {seq for seq, seg in self.segments.items()
                  if seq != self.current and seg.size >= SMALL_SEGMENT_BYTES and seg.live_bytes * 4 < seg.size}
        if sparse:
            self._relocate = [(mid, loc) for mid, loc in self.locs.items() if loc.seg in sparse]
            self._relocate_due = bool(self._relocate)

    def _kick(self) -> None:
        """Let the disk worker run, if there is an event loop here (during
        recovery there is not: the deletions wait for the first batch)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self.disk.kick()

    # -- messages ---------------------------------------------------------
    def new_id(self, now: float) -> str:
        """Queue ids sort by arrival: milliseconds in hex, then a counter of
        this process and randomness (unique across restarts and processes)."""
        while True:
            self._counter = (self._counter + 1) & 0xFFF
            qid = f"{int(now * 1000):011X}{self._counter:03X}{secrets.token_hex(2).upper()[:3]}"
            if qid not in self.locs:
                return qid

    def free_bytes(self) -> int:
        free = shutil.disk_usage(self.root).free
        self._free_seen = (time.monotonic(), free)
        self._stored_since = 0
        return free

    def has_room(self, size: int = 0) -> bool:
        """Is there room for ``size`` more octets above ``min_free_bytes``?
        Far from the limit (:data:`FREE_SLACK_BYTES` more than it, less what
        was stored since), a reading less than :data:`FREE_READING_SECONDS`
        old answers: not a ``statvfs`` for every message.  Near it, every
        question reads the disk again.  (A write that meets a full disk
        fails all the same and is answered 4xx.)"""
        seen = self._free_seen
        if (seen is not None and time.monotonic() - seen[0] < FREE_READING_SECONDS
                and seen[1] - self._stored_since - size >= self.min_free_bytes + FREE_SLACK_BYTES):
            return True
        try:
            return self.free_bytes() - size >= self.min_free_bytes
        except OSError:
            return False

    async def store(self, env: Envelope, data: bytes) -> None:
        """Write a message durably; raises :class:`SpoolFull` or ``OSError``."""
        if not self.has_room(len(data)):
            raise SpoolFull(errno.ENOSPC, "spool free space below the minimum")
        self._stored_since += len(data)
        await self.disk.write(env, data)

    def _forget(self, msg_id: str) -> bytes | None:
        data = self._fresh.pop(msg_id, None)
        if data is not None:
            self._fresh_bytes -= len(data)
        return data

    def exists(self, msg_id: str) -> bool:
        return msg_id in self.locs

    def _read(self, loc: Loc, msg_id: str) -> bytes:
        if loc.seg < 0:
            return decode_message((self.msg / msg_id).read_bytes())[1]
        return self._read_range(loc.seg, loc.at, loc.size)

    async def read(self, msg_id: str) -> bytes:
        """The message bytes (FileNotFoundError when it was deleted): from
        memory for the first read after :meth:`store`, else from disk."""
        data = self._forget(msg_id)
        if data is not None:
            return data
        loc = self.locs.get(msg_id)
        if loc is None:
            raise FileNotFoundError(errno.ENOENT, "no such message", msg_id)
        return await asyncio.to_thread(self._read, loc, msg_id)

    def remove(self, msg_id: str) -> None:
        """Forget a message now (an admin's delete: before its event is
        committed, so that no snapshot can name it live without it; or found
        finished at start); its disk space goes with the next disk batch."""
        self._forget(msg_id)
        if self._drop_loc(msg_id) is not None:
            self._kick()

    def _unlink_batch(self, names: list[str]) -> list[BaseException | None]:
        """Worker: delete segments and old msg/ files (no fsync: the snapshot
        says what is live whether or not a deletion was lost)."""
        results: list[BaseException | None] = []
        w = self._writer
        for name in names:
            try:
                if name == f"{SEGMENT_PREFIX}{w.seq:08d}":
                    results.append(None)  # appended to again meanwhile: it stays
                    continue
                (self.root / name).unlink()
                results.append(None)
            except FileNotFoundError:
                results.append(None)
            except OSError as exc:
                results.append(exc)
        return results

    async def discard(self, msg_id: str) -> None:
        """A finished message goes (its final events were committed before
        this is asked); its segment is deleted once nothing in it is live."""
        self.remove(msg_id)

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
        spool_info = (snapshot or {}).get("spool") or {}
        tail = tuple(spool_info.get("tail") or (0, 0))
        named = {mid: tuple(v) for mid, v in (spool_info.get("live") or {}).items()}
        envelopes: dict[str, Envelope] = {}
        corrupt: list[str] = []
        self.locs.clear()
        self.segments.clear()
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
                self.locs[env.id] = Loc(-1, 0)
            except (ValueError, KeyError, TypeError, OSError) as exc:
                (self.root / "corrupt").mkdir(exist_ok=True)
                os.replace(path, self.root / "corrupt" / path.name)
                corrupt.append(path.name)
                log.error("spool_file_corrupt", file=path.name, error=str(exc))
        segments = self.segment_files()
        chosen: dict[str, Loc] = {}
        for seq, path in segments:
            blob = path.read_bytes()
            records, good, problem = _parse_records(blob)
            self.segments[seq] = _Segment(size=good)
            for env, start, at, size, end in records:
                if (seq, start) >= tail or named.get(env.id) == (seq, start):
                    envelopes[env.id] = env
                    chosen[env.id] = Loc(seq, start, at, size, end)  # a copy further on wins (same bytes)
            if problem is not None:
                # A record cut short ends an append that was never acknowledged
                # (a crash, or a failed write that could not be cut back);
                # anything else is kept for a person.
                if problem != "cut short":
                    (self.root / "corrupt").mkdir(exist_ok=True)
                    (self.root / "corrupt" / f"{path.name}.from-{good}").write_bytes(blob[good:])
                    corrupt.append(path.name)
                    log.error("spool_segment_corrupt", file=path.name, offset=good, error=problem)
                with open(path, "r+b") as fh:  # appends go on after the last good record
                    fh.truncate(good)
                    os.fsync(fh.fileno())
                cleaned += 1
        for mid, loc in chosen.items():
            self._add(mid, loc)
        self.current = segments[-1][0] if segments else 0
        self._writer.seq = self.current  # after a restart, appends go to a new segment
        for seq in [s for s, seg in self.segments.items() if seg.live == 0 and s != self.current]:
            del self.segments[seq]
            self.segment_path(seq).unlink(missing_ok=True)
        self._due.clear()
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
        self._writer.fd = None  # the next append starts a new segment
        if can_sync_filesystem() and self._sync_fd is None:
            self._sync_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        journal.compact_now(json.dumps(snapshot_fn(), separators=(",", ":")).encode(),
                            json.dumps(self.spool_snapshot(), separators=(",", ":")).encode())
        self.journal = journal
        return journal

    def close(self) -> None:
        w = self._writer
        if w.fd is not None:
            os.close(w.fd)
            w.fd = None
        if self._sync_fd is not None:
            os.close(self._sync_fd)
            self._sync_fd = None


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
        self._torn = False  # a failed write left part of a line that could not be cut off
        self._last = 0  # octets of the last write
        self._closed = False
        self.flushes = 0

    def _path(self, gen: int) -> Path:
        return self.spool.root / f"{JOURNAL_PREFIX}{gen:08d}"

    def compact_now(self, snapshot: bytes, spool_info: bytes = b"{}") -> None:
        """Write ``snapshot`` (and which records are live, ``spool_info``) as
        the state at the start of a new generation, then drop older journals
        (blocking).

        Until the snapshot's rename, the old generation stays the truth (its
        journal keeps every event); from the rename on, the new one is, and
        appends go to the new journal at once.  Old journals are deleted only
        after the rename is durable."""
        root = self.spool.root
        if self.spool.msg.exists():
            fsync_dir(self.spool.msg)  # unlinks of finished old msg/ files are durable first
        new_gen = self.gen + 1
        fd = os.open(self._path(new_gen), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.ftruncate(fd, 0)  # left over from an earlier attempt that failed
            fsync_dir(root)
            tmp = root / (SNAPSHOT + ".tmp")
            doc = b'{"version":2,"gen":%d,"spool":%s,"state":' % (new_gen, spool_info) + snapshot + b"}"
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
            # events up to here (events are applied when appended), and the
            # records live up to here (records are live once written).
            spool_info = json.dumps(self.spool.spool_snapshot(), separators=(",", ":")).encode()
            snapshot = spool_info + b"\n" + json.dumps(self._snapshot_fn(), separators=(",", ":")).encode()
            self.spool.plan_relocations()
        return _Batch(data, waiters, snapshot)

    def give_back(self, batch: "_Batch") -> None:
        """A batch that was not written: it goes first next time (without its
        snapshot, which newer events would make stale)."""
        self._retry = _Batch(batch.data, batch.waiters, None)

    async def committed(self, batch: "_Batch") -> None:
        if batch.snapshot is not None:
            spool_info, _, state = batch.snapshot.partition(b"\n")
            try:
                await asyncio.to_thread(self.compact_now, state, spool_info)
            except OSError as exc:  # the journal goes on growing; next time perhaps
                log.error("journal_compaction_failed", error=str(exc))
        self.flushes += 1
        for fut in batch.waiters:
            if not fut.done():
                fut.set_result(None)

    def _write(self, data: bytes, sync: bool = True) -> None:
        """Worker: append ``data`` and fsync (unless ``sync`` is false: the
        caller syncs, or calls :meth:`_undo`)."""
        assert self._fd is not None
        if self._torn:
            data = b"\n" + data  # the half line left before stands alone (skipped at recovery)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            if sync:
                os.fsync(self._fd)
        except OSError:
            # Cut what a failed write left (disk full...) so that the retry
            # does not leave half a line or events written twice.
            try:
                os.ftruncate(self._fd, self._size)
                self._torn = False
            except OSError:
                self._torn = True
                try:
                    self._size = os.fstat(self._fd).st_size  # later cuts keep the half line
                except OSError:
                    pass
            raise
        self._torn = False
        self._size += len(data)
        self._last = len(data)

    def _undo(self) -> None:
        """Worker: the last write was not made durable: cut it off, as a
        failed write is (the batch is retried)."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, self._size - self._last)
            self._size -= self._last
        except OSError:
            self._torn = True  # its events may be there twice: replayed twice, harmless

    async def close(self) -> None:
        self._closed = True
        await self.spool.disk.drain()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.spool.close()
