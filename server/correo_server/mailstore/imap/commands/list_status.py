"""LIST-STATUS (RFC 5819): ``LIST ... RETURN (STATUS (items))`` answers a
STATUS line after each selectable folder listed (none for ``\\Noselect`` or
``\\NonExistent`` names, nor for a folder deleted meanwhile), with any
registered STATUS item (SIZE, HIGHESTMODSEQ, MAILBOXID, APPENDLIMIT...)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..backend import NoSuchFolder
from ..reader import Reader
from .base import ListOption, Registry
from .status import prepare, status_items, status_line

if TYPE_CHECKING:
    from ..backend import FolderEntry
    from ..session import Session


def register(registry: Registry) -> None:
    def parse(r: Reader) -> list[str]:
        return status_items(r, registry)

    async def after(s: "Session", entry: "FolderEntry", items: list[str]) -> None:
        if entry.selectable:
            prepare(s, items)
            try:
                folder = await s.mailbox.folder(entry.name)
            except NoSuchFolder:
                return
            s.write(await status_line(s, folder, items))

    registry.capability("LIST-STATUS")
    registry.list_return_option(ListOption("STATUS", parse=parse, after=after))
