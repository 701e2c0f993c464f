"""REPLACE (RFC 8508): store a new version of a message and expunge the
old one in one command — what a client saving a draft again does, without
a window in which both versions (or neither) are in the folder.

``REPLACE n mailbox [flags] [date] message`` (and ``UID REPLACE uid ...``):
the new message is appended to ``mailbox`` (any folder; the message data
may take every form APPEND takes — BINARY's literal8, CATENATE, UTF8), then
the old one is expunged from the selected folder, as UID EXPUNGE does it
(other ``\\Deleted`` messages stay).  The answer is ``* OK [APPENDUID v
uid] Replacement Message ready``, the EXPUNGE (or VANISHED) of the old
message, and the EXISTS of the new one when it went to the selected folder.
When the append fails (``NO [TRYCREATE]``, ``[OVERQUOTA]``, ``[BADURL]``),
the old message stays.  A message number beyond the last is ``BAD``; a UID
that is not there, or a read-only (EXAMINEd) folder, is ``NO``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import responses as R
from ..backend import NoSuchFolder
from ..reader import Reader
from .append import Message, message, prepared
from .base import Command, Parse, Registry, Reply, State, bad, no, ok

if TYPE_CHECKING:
    from ..session import Session

NAME = "REPLACE"


@dataclass(frozen=True, kw_only=True)
class Replace(Command):
    name = NAME
    states = State.SELECTED
    capability = NAME
    uid_form = True
    usage = "{cmd} needs a message, a mailbox name and the new message"

    target: int | None  # a message number or UID; None: "*", the last
    mailbox: str
    message: Message

    @classmethod
    def parse(cls, r: Reader, p: Parse) -> "Replace":
        r.sp()
        target = r.seq_number()
        r.sp()
        mailbox = r.mailbox()
        r.sp()
        return cls(tag=p.tag, uid=p.uid, target=target, mailbox=mailbox, message=message(r, p))

    async def run(self, s: "Session") -> Reply:
        view = s.view
        if view.readonly:
            return no("Mailbox is read-only.", "READ-ONLY")
        if self.target is None:
            if not view.uids:
                return bad("No messages to replace")
            old = view.uids[-1]
        elif self.uid:
            if view.seq_of(self.target) is None or view.folder.get(self.target) is None:
                return no(f"No message with UID {self.target} to replace")
            old = self.target
        else:
            if self.target > len(view.uids):
                return bad("Invalid messageset")
            old = view.uids[self.target - 1]
        try:
            folder = await s.mailbox.folder(self.mailbox)
        except NoSuchFolder:
            return no("Mailbox doesn't exist", "TRYCREATE")
        data, flags, when, tz = await prepared(s, self.message)
        uid = await folder.append(data, flags=flags, internaldate=when, tzoffset=tz)
        s.write(R.untagged(f"OK [APPENDUID {folder.uidvalidity} {uid}] Replacement Message ready"))
        gone = await view.folder.expunge([old], origin=s)
        for line in view.remove(gone):
            s.write(line)
        return ok("Replace completed.")


def register(registry: Registry) -> None:
    registry.command(Replace)
