"""STATUS=SIZE (RFC 8438): the SIZE status item, the octets of a folder's
messages."""
from __future__ import annotations

from .base import Registry, StatusItem


def register(registry: Registry) -> None:
    registry.capability("STATUS=SIZE")
    registry.status_item(StatusItem("SIZE", lambda folder: folder.usage().bytes))
