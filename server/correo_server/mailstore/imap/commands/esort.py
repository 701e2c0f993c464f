"""ESORT (RFC 5267 section 3): ``SORT RETURN (MIN MAX ALL COUNT) ...``
answers in ESEARCH form (:mod:`.esearch`); ALL lists the messages in the
sort order, ranges only where they ascend by one."""
from __future__ import annotations

from .base import Registry


def register(registry: Registry) -> None:
    registry.capability("ESORT")
    registry.sort_returns = True
