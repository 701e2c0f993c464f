"""MULTIAPPEND (RFC 3502): one APPEND with several messages, each with its
own flags and date, stored all or none (:meth:`~..backend.Folder.append_all`:
one quota check, one commit) and answered ``APPENDUID uidvalidity uid-set``.
A failure stores nothing (``NO [OVERQUOTA]``, ``NO [TRYCREATE]``, ...)."""
from __future__ import annotations

from .base import Registry


def register(registry: Registry) -> None:
    registry.capability("MULTIAPPEND")
    registry.multiappend = True
