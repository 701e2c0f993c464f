"""SAVEDATE (RFC 8514): when a message was saved in *this* folder —
delivered, APPENDed, COPYed or MOVEd here — as opposed to its internal
date, which APPEND may set to anything and COPY keeps.  What "empty the
Trash of what was put there over 30 days ago" needs.

- FETCH ``SAVEDATE`` → ``SAVEDATE " 4-Dec-2026 21:47:08 +0000"`` (the
  server's time zone);
- SEARCH ``SAVEDBEFORE`` / ``SAVEDON`` / ``SAVEDSINCE`` date (the day in
  that zone, as BEFORE/ON/SINCE compare internal dates) and
  ``SAVEDATESUPPORTED`` (every folder here supports it: all messages).

Where it comes from: a message file's Maildir name begins with the time it
was written into the folder (``<seconds>.M<microseconds>P...``); delivery,
APPEND, COPY and MOVE each write a new name (:mod:`...maildir`), flag
changes never do.  A file whose name does not start so (put there by
another program) has its internal date as save date."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from .. import fetch as F
from .. import responses as R
from .. import search as S
from ..backend import MessageInfo
from ..reader import Reader
from .base import Registry

NAME = "SAVEDATE"
_NAME_TIME = re.compile(r"(\d{9,11})(?:\.M(\d{1,6})P)?")


def saved_at(msg: MessageInfo) -> float:
    """Epoch seconds the message was saved in its folder."""
    m = _NAME_TIME.match(msg.base)
    if m is None:
        return msg.internaldate
    return int(m.group(1)) + (int(m.group(2)) / 1_000_000 if m.group(2) else 0.0)


def _zone(ts: float) -> int:
    return (time.localtime(ts).tm_gmtoff or 0) // 60


def saved_day(msg: MessageInfo) -> date:
    ts = saved_at(msg)
    return datetime.fromtimestamp(ts, timezone(timedelta(minutes=_zone(ts)))).date()


class SaveDate(F.FetchItem):
    key = NAME

    def render(self, f: F.Fetched) -> bytes:
        ts = saved_at(f.msg)
        return b"SAVEDATE " + R.internaldate(ts, _zone(ts))


@dataclass(frozen=True)
class Saved(S.Key):
    kind: str  # savedbefore, savedon, savedsince
    when: date

    def matches(self, c: S.Candidate) -> bool:
        day = saved_day(c.msg)
        if self.kind == "savedbefore":
            return day < self.when
        if self.kind == "savedon":
            return day == self.when
        return day >= self.when


def _saved(r: Reader, name: str, sub) -> S.Key:
    r.sp(f"{name} needs a date such as 1-Feb-2024")
    return Saved(name.lower(), r.date())


def _supported(r: Reader, name: str, sub) -> S.Key:
    return S.All()


def register(registry: Registry) -> None:
    registry.capability(NAME)
    registry.fetch_item(NAME, lambda r, name: SaveDate())
    for name in ("SAVEDBEFORE", "SAVEDON", "SAVEDSINCE"):
        registry.search_key(name, _saved)
    registry.search_key("SAVEDATESUPPORTED", _supported)
