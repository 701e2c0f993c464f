"""STORE (RFC 3501 6.4.6): set, add or remove flags, answering the new
flags (unless .SILENT).  Modifiers come from the registry (CONDSTORE's
UNCHANGEDSINCE, RFC 7162 3.1.3, which the store applies per message and
reports refused messages in ``[MODIFIED ...]``)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import responses as R
from ..reader import Reader, SeqSet
from .base import Command, Options, Parse, Registry, Reply, State, bad, modifiers, no, ok

if TYPE_CHECKING:
    from ..session import Session

_ACTION = re.compile(rb"([+-]?)FLAGS(\.SILENT)?", re.I)
_SYSTEM = ("\\answered", "\\flagged", "\\deleted", "\\seen", "\\draft", "\\recent")


@dataclass(frozen=True, kw_only=True)
class Store(Command):
    name = "STORE"
    states = State.SELECTED
    uid_form = True
    usage = "{cmd} needs a {set}, FLAGS, +FLAGS or -FLAGS, and flags"
    timed = True

    set: SeqSet
    mode: str  # add, remove, replace
    silent: bool
    flags: list[str]
    options: Options = field(default_factory=Options)

    @classmethod
    def parse(cls, r: Reader, p: Parse) -> "Store":
        r.sp()
        seqset = r.seq_set()
        r.sp()
        options = Options()
        if r.peek() == b"(":
            options = modifiers(r, p.registry.store_modifiers, "a STORE modifier")
            r.sp()
        m = r.match(_ACTION)
        if m is None:
            r.expected("FLAGS, +FLAGS or -FLAGS")
        mode = {b"+": "add", b"-": "remove"}.get(m[:1], "replace")
        silent = m.upper().endswith(b".SILENT")
        r.sp("Missing the flags to set, add or remove")
        flags = r.store_flags()
        for f in flags:
            if f == "\\*" or (f.startswith("\\") and f.lower() not in _SYSTEM):
                r.fail(f"Invalid flag {f[:40]}")
        return cls(tag=p.tag, uid=p.uid, set=seqset, mode=mode, silent=silent, flags=flags, options=options)

    def reports_expunges(self) -> bool:
        return self.uid

    async def run(self, s: "Session") -> Reply:
        from ..session import BadSet

        view = s.view
        if view.readonly:
            return no("Mailbox is read-only.", "READ-ONLY")
        try:
            uids = s.resolve(self.set, self.uid)
        except BadSet:
            return bad("Error in IMAP command STORE: Invalid messageset")
        self.options.apply(s, s.registry.store_modifiers)
        live = [u for u in uids if u not in view.pending_expunge]
        folder = view.folder
        changed, failed = await folder.store(live, self.flags, self.mode,
                                             unchanged_since=self.options.get("UNCHANGEDSINCE"), origin=s)
        keywords = folder.keywords()
        if not keywords <= view.keywords:
            view.keywords |= keywords
            for line in view.flags_responses():
                s.write(line)
        changed_uids = {m.uid for m in changed}
        failed_set = set(failed)
        for uid in live:
            msg = folder.get(uid)
            if msg is None or uid in failed_set:
                continue
            items = []
            if not self.silent:
                flags = msg.flags | {"\\Recent"} if uid in view.recent else msg.flags
                items.append(b"FLAGS " + R.flag_list(flags))
            elif not (s.condstore and uid in changed_uids):
                continue
            if s.condstore:
                items.append(b"MODSEQ (%d)" % msg.modseq)
            s.write(view.fetch_head(uid, with_uid=self.uid) + b" ".join(items) + b")\r\n")
        if failed:
            numbers = failed if self.uid else [view.seq_of(u) for u in failed]
            return ok("Conditional STORE failed", "MODIFIED " + R.number_set(n for n in numbers if n).decode())
        return ok("Store completed")


def register(registry: Registry) -> None:
    registry.command(Store)
