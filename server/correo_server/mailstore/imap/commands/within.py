"""WITHIN (RFC 5032): SEARCH keys ``YOUNGER n`` and ``OLDER n`` — messages
whose internal date (arrival) is within, or more than, ``n`` seconds
before the search.  What "last 7 days" views and clean-up rules ask
without the client working out a date (and, unlike SINCE, to the second
rather than the day, whatever the client's time zone).

The interval is measured from when the command is parsed; a search kept up
to date (CONTEXT=SEARCH's UPDATE) is re-run when the folder changes, not
as time passes."""
from __future__ import annotations

import time
from dataclasses import dataclass

from .. import search as S
from ..reader import Reader
from .base import Registry

NAME = "WITHIN"


@dataclass(frozen=True)
class Within(S.Key):
    younger: bool
    cutoff: float  # epoch seconds: the search's time less the interval

    def matches(self, c: S.Candidate) -> bool:
        return c.msg.internaldate >= self.cutoff if self.younger else c.msg.internaldate < self.cutoff


def _within(r: Reader, name: str, sub) -> S.Key:
    r.sp(f"{name} needs an interval in seconds")
    seconds = r.number(nonzero=True, what="an interval in seconds")
    return Within(name == "YOUNGER", time.time() - seconds)


def register(registry: Registry) -> None:
    registry.capability(NAME)
    registry.search_key("YOUNGER", _within)
    registry.search_key("OLDER", _within)
