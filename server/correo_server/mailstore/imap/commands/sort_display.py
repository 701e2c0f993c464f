"""SORT=DISPLAY (RFC 5957): the DISPLAYFROM and DISPLAYTO sort criteria —
the display name of the first From/To address (decoded), or its addr-spec
when it has none."""
from __future__ import annotations

from .base import Registry, SortKey


def register(registry: Registry) -> None:
    registry.capability("SORT=DISPLAY")
    registry.sort_key(SortKey("DISPLAYFROM", lambda msg, s: s.display_from if s is not None else ""))
    registry.sort_key(SortKey("DISPLAYTO", lambda msg, s: s.display_to if s is not None else ""))
