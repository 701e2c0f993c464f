"""APPEND (RFC 3501 6.3.11), answering ``APPENDUID`` (UIDPLUS, RFC 4315)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..backend import NoSuchFolder
from ..reader import Reader
from .base import LOGGED_IN, Command, Parse, Registry, Reply, bad, no, ok

if TYPE_CHECKING:
    from ..session import Session

SYSTEM = ("\\answered", "\\flagged", "\\deleted", "\\seen", "\\draft")


@dataclass(frozen=True, kw_only=True)
class Append(Command):
    name = "APPEND"
    states = LOGGED_IN
    usage = "{cmd} needs a mailbox name and a message"

    mailbox: str
    flags: list[str]
    date: tuple[float, int] | None  # (epoch seconds, zone offset in minutes)
    message: bytes

    @classmethod
    def parse(cls, r: Reader, p: Parse) -> "Append":
        r.sp()
        mailbox = r.mailbox()
        r.sp()
        flags: list[str] = []
        when = None
        if r.peek() == b"(":
            flags = r.flag_list()
            r.sp()
        if r.peek() == b'"':
            when = r.date_time()
            r.sp()
        if r.peek() != b"{":
            r.expected("the message as a literal ({size})")
        return cls(tag=p.tag, mailbox=mailbox, flags=flags, date=when, message=r.literal())

    async def run(self, s: "Session") -> Reply:
        try:
            folder = await s.mailbox.folder(self.mailbox)
        except NoSuchFolder:
            return no("Mailbox doesn't exist", "TRYCREATE")
        if not self.message:
            return no("Can't save a zero byte message.")
        flags = [f for f in self.flags if f.lower() != "\\recent"]
        for f in flags:
            if f == "\\*" or (f.startswith("\\") and f.lower() not in SYSTEM):
                return bad(f"Invalid system flag {f}")
        when, tz = self.date if self.date else (None, None)
        uid = await folder.append(self.message, flags=flags, internaldate=when, tzoffset=tz)
        return ok("Append completed.", f"APPENDUID {folder.uidvalidity} {uid}")


def register(registry: Registry) -> None:
    registry.command(Append)
