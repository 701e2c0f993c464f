"""SPECIAL-USE and CREATE-SPECIAL-USE (RFC 6154).

Folders carry their special use in LIST: Sent, Drafts, Trash and Junk by
their names (always, as the RFC allows), and any folder the use a client
gave when creating it — ``CREATE name (USE (\\Archive))`` — kept in the
folder's index, so it follows a RENAME.  ``LIST (SPECIAL-USE)`` lists only
folders that have one; ``RETURN (SPECIAL-USE)`` is accepted (they are
always said).  A use the server cannot give (``\\All`` and ``\\Flagged``
name virtual folders, which correo does not keep; or an unknown one) is
refused ``NO [USEATTR]`` and nothing is created.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..reader import Reader
from .base import ListOption, Modifier, Refused, Registry, no

if TYPE_CHECKING:
    from ..backend import Folder
    from ..session import Session

CREATABLE = {"\\archive": "\\Archive", "\\drafts": "\\Drafts", "\\junk": "\\Junk", "\\sent": "\\Sent",
             "\\trash": "\\Trash"}
VIRTUAL = {"\\all": "\\All", "\\flagged": "\\Flagged"}


def _uses(r: Reader) -> list[str]:
    return r.paren_list(r.flag, allow_empty=False, what="a list of special-use attributes")


def _check(s: "Session", uses: list[str]) -> None:
    for use in uses:
        if use.lower() in VIRTUAL:
            raise Refused(no(f"{VIRTUAL[use.lower()]} is a virtual folder this server does not keep", "USEATTR"))
        if use.lower() not in CREATABLE:
            raise Refused(no(f"Unknown special use {use[:40]}", "USEATTR"))


async def _apply(s: "Session", uses: list[str], folder: "Folder") -> None:
    value = " ".join(dict.fromkeys(CREATABLE[u.lower()] for u in uses))
    await folder.set_ext_meta("special_use", value)


def register(registry: Registry) -> None:
    registry.capability("SPECIAL-USE")
    registry.capability("CREATE-SPECIAL-USE")
    registry.list_select_option(ListOption("SPECIAL-USE", keep=lambda entry: bool(entry.special_use)))
    registry.list_return_option(ListOption("SPECIAL-USE"))
    registry.create_param(Modifier("USE", parse=_uses, on_use=_check, after=_apply))
