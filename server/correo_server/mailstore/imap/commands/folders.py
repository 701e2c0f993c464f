"""The folder hierarchy (RFC 3501 6.3.3-7): CREATE, DELETE, RENAME,
SUBSCRIBE, UNSUBSCRIBE.  The hierarchy delimiter is ``/``.  CREATE takes
the registry's parameters (RFC 4466: CREATE-SPECIAL-USE's USE) and answers
with a code an extension gives (OBJECTID's MAILBOXID)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..reader import Reader
from ..states import Selected
from .base import LOGGED_IN, Command, Options, Parse, Registry, Reply, modifiers, no, ok

if TYPE_CHECKING:
    from ..session import Session

DELIMITER = "/"


@dataclass(frozen=True, kw_only=True)
class MailboxCommand(Command):
    """A command whose one argument is a mailbox name."""

    usage = "{cmd} needs a mailbox name"
    states = LOGGED_IN

    mailbox: str

    @classmethod
    def parse(cls, r: Reader, p: Parse) -> "MailboxCommand":
        r.sp()
        return cls(tag=p.tag, mailbox=r.mailbox())


@dataclass(frozen=True, kw_only=True)
class Create(MailboxCommand):
    name = "CREATE"

    options: Options = field(default_factory=Options)

    @classmethod
    def parse(cls, r: Reader, p: Parse) -> "Create":
        r.sp()
        mailbox = r.mailbox()
        options = Options()
        if r.take(b" "):  # RFC 4466 create parameters
            options = modifiers(r, p.registry.create_params, "a CREATE parameter")
        return cls(tag=p.tag, mailbox=mailbox, options=options)

    async def run(self, s: "Session") -> Reply:
        name = self.mailbox.rstrip(DELIMITER) if self.mailbox != DELIMITER else ""
        if not name:
            return no("Empty mailbox name", "CANNOT")
        table = s.registry.create_params
        self.options.apply(s, table)
        folder = await s.mailbox.create(name)
        for param, value in self.options.values.items():
            after = table[param].after
            if after is not None:
                await after(s, value, folder)
        code = None
        for make in s.registry.create_codes:
            code = code or await make(s, folder)
        return ok("Create completed.", code)


@dataclass(frozen=True, kw_only=True)
class Delete(MailboxCommand):
    name = "DELETE"

    async def run(self, s: "Session") -> Reply:
        if self.mailbox == "INBOX":
            return no("INBOX can't be deleted.", "CANNOT")
        if isinstance(s.state, Selected) and s.state.view.folder.name == self.mailbox:
            s.leave_selected()
        await s.mailbox.delete(self.mailbox)
        return ok("Delete completed.")


@dataclass(frozen=True, kw_only=True)
class Rename(Command):
    name = "RENAME"
    states = LOGGED_IN
    usage = "{cmd} needs the old and the new mailbox name"

    old: str
    new: str

    @classmethod
    def parse(cls, r: Reader, p: Parse) -> "Rename":
        r.sp()
        old = r.mailbox()
        r.sp()
        return cls(tag=p.tag, old=old, new=r.mailbox())

    async def run(self, s: "Session") -> Reply:
        new = self.new.rstrip(DELIMITER)
        if not new:
            return no("Empty mailbox name", "CANNOT")
        if not await s.mailbox.exists(self.old):
            return no("Mailbox doesn't exist", "NONEXISTENT")
        await s.mailbox.rename(self.old, new)
        return ok("Rename completed.")


@dataclass(frozen=True, kw_only=True)
class Subscribe(MailboxCommand):
    name = "SUBSCRIBE"

    async def run(self, s: "Session") -> Reply:
        await s.mailbox.subscribe(self.mailbox, True)
        return ok("Subscribe completed.")


@dataclass(frozen=True, kw_only=True)
class Unsubscribe(MailboxCommand):
    name = "UNSUBSCRIBE"

    async def run(self, s: "Session") -> Reply:
        await s.mailbox.subscribe(self.mailbox, False)
        return ok("Unsubscribe completed.")


def register(registry: Registry) -> None:
    for cls in (Create, Delete, Rename, Subscribe, Unsubscribe):
        registry.command(cls)
