"""STATUS (RFC 3501 6.3.10): counters of a folder without selecting it.
The items are the registry's STATUS items; RFC 3501's are here, others come
from their extensions (HIGHESTMODSEQ from :mod:`.condstore`, SIZE from
:mod:`.status_size`).  :func:`status_line` is shared with LIST-STATUS."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .. import responses as R
from ..reader import Reader
from .base import LOGGED_IN, Command, Parse, Registry, Reply, StatusItem, ok

if TYPE_CHECKING:
    from ..backend import Folder
    from ..session import Session


def status_items(r: Reader, registry: Registry) -> list[str]:
    """``(MESSAGES UNSEEN ...)`` of registered items."""
    items = [i.upper() for i in r.paren_list(lambda: r.atom("a status item"), allow_empty=False,
                                             what="a list of status items")]
    for i in items:
        if i not in registry.status_items:
            r.fail(f"Unknown STATUS item {i[:40]}")
    return items


def prepare(s: "Session", items: list[str]) -> None:
    """Run what asking for these items implies (e.g. CONDSTORE goes on)."""
    for item in items:
        hook = s.registry.status_items[item].on_request
        if hook is not None:
            hook(s)


async def status_line(s: "Session", folder: "Folder", items: list[str]) -> bytes:
    table = s.registry.status_items
    values = []
    for i in items:
        item = table[i]
        value = await item.fetch(s, folder) if item.fetch is not None else b"%d" % item.value(folder)
        values.append(i.encode() + b" " + value)
    return R.untagged(b"STATUS " + s.quote_mailbox(folder.name) + b" (" + b" ".join(values) + b")")


@dataclass(frozen=True, kw_only=True)
class Status(Command):
    name = "STATUS"
    states = LOGGED_IN
    usage = "{cmd} needs a mailbox name and a list of status items"
    timed = True

    mailbox: str
    items: list[str]

    @classmethod
    def parse(cls, r: Reader, p: Parse) -> "Status":
        r.sp()
        mailbox = r.mailbox()
        r.sp()
        return cls(tag=p.tag, mailbox=mailbox, items=status_items(r, p.registry))

    async def run(self, s: "Session") -> Reply:
        prepare(s, self.items)
        folder = await s.mailbox.folder(self.mailbox)
        s.write(await status_line(s, folder, self.items))
        return ok("Status completed")


_BASE: dict[str, Callable[["Folder"], int]] = {
    "MESSAGES": len,
    "RECENT": lambda f: f.recent_count(),
    "UIDNEXT": lambda f: f.uidnext,
    "UIDVALIDITY": lambda f: f.uidvalidity,
    "UNSEEN": lambda f: f.unseen(),
}


def register(registry: Registry) -> None:
    for name, value in _BASE.items():
        registry.status_item(StatusItem(name, value))
    registry.command(Status)
