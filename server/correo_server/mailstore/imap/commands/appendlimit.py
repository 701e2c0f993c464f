"""APPENDLIMIT (RFC 7889): the largest message APPEND takes
(``mailstore.maxLiteralBytes``), said in the capability, and as the STATUS
item APPENDLIMIT of every folder (the same limit for all; LIST-STATUS
too).  A larger literal is refused ``NO [TOOBIG]`` before it is sent
(:mod:`..server`)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Registry, StatusItem

if TYPE_CHECKING:
    from ..session import Session


async def _status(s: "Session", folder: Any) -> bytes:
    return b"%d" % s.max_literal


def register(registry: Registry) -> None:
    registry.capability(lambda s: f"APPENDLIMIT={s.max_literal}")
    registry.status_item(StatusItem("APPENDLIMIT", fetch=_status))
