"""The spool's free-space check: far from the minimum a reading of the disk
answers for a moment (not a ``statvfs`` per message); near the minimum every
question reads the disk again, so that a filling disk is refused in time."""
from __future__ import annotations

import shutil
from collections import namedtuple

from correo_server.queue import spool as spoolmod
from correo_server.queue.spool import FREE_SLACK_BYTES, Spool

Usage = namedtuple("Usage", "total used free")
MIN_FREE = 64 * 1024 * 1024


class Disk:
    def __init__(self, free: int) -> None:
        self.free = free
        self.reads = 0

    def __call__(self, _path) -> Usage:
        self.reads += 1
        return Usage(1 << 40, 0, self.free)


def spool(tmp_path, monkeypatch, free: int) -> tuple[Spool, Disk]:
    disk = Disk(free)
    monkeypatch.setattr(shutil, "disk_usage", disk)
    return Spool(tmp_path, min_free_bytes=MIN_FREE), disk


def test_far_from_the_minimum_one_reading_answers_for_a_moment(tmp_path, monkeypatch):
    s, disk = spool(tmp_path, monkeypatch, free=10 * FREE_SLACK_BYTES)
    assert all(s.has_room(2048) for _ in range(100))
    assert disk.reads == 1
    now = [spoolmod.time.monotonic()]
    monkeypatch.setattr(spoolmod.time, "monotonic", lambda: now[0])
    now[0] += spoolmod.FREE_READING_SECONDS + 0.1
    disk.free = MIN_FREE - 1  # the disk filled meanwhile
    assert not s.has_room()
    assert disk.reads == 2


def test_near_the_minimum_every_question_reads_the_disk(tmp_path, monkeypatch):
    s, disk = spool(tmp_path, monkeypatch, free=MIN_FREE + FREE_SLACK_BYTES // 2)
    assert s.has_room(2048) and s.has_room(2048)
    assert disk.reads == 2
    disk.free = MIN_FREE + 100
    assert not s.has_room(2048)


def test_what_was_stored_since_counts(tmp_path, monkeypatch):
    s, disk = spool(tmp_path, monkeypatch, free=MIN_FREE + FREE_SLACK_BYTES + 10_000)
    assert s.has_room(1000) and disk.reads == 1
    s._stored_since += 20_000  # as store() counts what it writes
    assert s.has_room(1000) and disk.reads == 2  # read again: not far enough any more
