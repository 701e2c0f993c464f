"""SPECIAL-USE (RFC 6154): Sent, Drafts, Trash and Junk carry \\Sent,
\\Drafts, \\Trash, \\Junk in LIST (always, as the RFC allows), and
``LIST (SPECIAL-USE)`` lists only such folders."""
from __future__ import annotations

from .base import ListOption, Registry


def register(registry: Registry) -> None:
    registry.capability("SPECIAL-USE")
    registry.list_select_option(ListOption("SPECIAL-USE", keep=lambda entry: bool(entry.special_use)))
    registry.list_return_option(ListOption("SPECIAL-USE"))
