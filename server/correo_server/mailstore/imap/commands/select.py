"""SELECT and EXAMINE (RFC 3501 6.3.1-2): open a folder read-write or
read-only.  Parameters in parentheses after the name (RFC 4466) come from
the registry's SELECT modifiers (CONDSTORE's, in :mod:`.condstore`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import responses as R
from ..reader import Reader
from ..states import Selected, SelectedView
from .base import LOGGED_IN, Command, Options, Parse, Registry, Reply, modifiers, ok

if TYPE_CHECKING:
    from ..session import Session


@dataclass(frozen=True, kw_only=True)
class Select(Command):
    name = "SELECT"
    states = LOGGED_IN
    usage = "{cmd} needs a mailbox name"
    timed = True
    readonly = False

    mailbox: str
    options: Options = field(default_factory=Options)

    @classmethod
    def parse(cls, r: Reader, p: Parse) -> "Select":
        r.sp()
        mailbox = r.mailbox()
        options = Options()
        if r.take(b" "):
            options = modifiers(r, p.registry.select_modifiers, "a SELECT parameter", allow_empty=True)
        return cls(tag=p.tag, mailbox=mailbox, options=options)

    async def run(self, s: "Session") -> Reply:
        table = s.registry.select_modifiers
        if isinstance(s.state, Selected) and s.registry.report_closed:
            s.write(R.untagged(b"OK [CLOSED] Previous mailbox closed."))  # RFC 7162 3.2.11
        s.leave_selected()
        self.options.apply(s, table)
        folder = await s.mailbox.folder(self.mailbox)
        view = SelectedView(folder, s, readonly=self.readonly)
        for setup in s.registry.view_setup:
            setup(s, view)
        out = view.flags_responses()
        out.append(R.untagged(b"%d EXISTS" % len(view)))
        if view.report_recent:
            out.append(R.untagged(b"%d RECENT" % len(view.recent)))
        for seq, uid in enumerate(view.uids if not view.uidonly else (), 1):  # UIDONLY: no numbers
            msg = folder.get(uid)
            if msg is not None and "\\Seen" not in msg.flags:
                out.append(R.untagged(b"OK [UNSEEN %d] First unseen." % seq))
                break
        out.append(R.untagged(b"OK [UIDVALIDITY %d] UIDs valid" % folder.uidvalidity))
        out.append(R.untagged(b"OK [UIDNEXT %d] Predicted next UID" % folder.uidnext))
        out.append(R.untagged(b"OK [HIGHESTMODSEQ %d] Highest" % folder.highestmodseq))  # RFC 7162 3.1.2.1
        for more in s.registry.select_responses:
            out += await more(s, view)
        for line in out:
            s.write(line)
        s.select(view)
        for name, value in self.options.values.items():
            after = table[name].after
            if after is not None:
                await after(s, value, self)
        return ok("Select completed", "READ-ONLY" if self.readonly else "READ-WRITE")


@dataclass(frozen=True, kw_only=True)
class Examine(Select):
    name = "EXAMINE"
    readonly = True


def register(registry: Registry) -> None:
    registry.command(Select)
    registry.command(Examine)
