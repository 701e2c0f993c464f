"""APPENDLIMIT (RFC 7889): the largest message APPEND takes
(``mailstore.maxLiteralBytes``), said in the capability."""
from __future__ import annotations

from .base import Registry


def register(registry: Registry) -> None:
    registry.capability(lambda s: f"APPENDLIMIT={s.max_literal}")
