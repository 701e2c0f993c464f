"""LITERAL+ (RFC 7888): non-synchronizing literals ``{n+}``.  The server
reads them without sending ``+`` (:meth:`..server.Connection.read_command`);
a client may use them for LOGIN's arguments too, so it is listed before
login as well."""
from __future__ import annotations

from .base import Registry, When


def register(registry: Registry) -> None:
    registry.capability("LITERAL+", when=When.ALWAYS, order=10)
