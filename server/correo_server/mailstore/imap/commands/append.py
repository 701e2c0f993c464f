"""APPEND (RFC 3501 6.3.11), answering ``APPENDUID`` (UIDPLUS, RFC 4315).

Extension points: other forms of the message data (``registry.append_data``:
BINARY's ``~{n}`` literal8, UTF8=ACCEPT's ``UTF8 (~{n})``; a form whose
message is only known when the command runs, CATENATE's, parses to an
object with ``async resolve(session) -> bytes``, called once the target
folder is found), and several
messages in one command when MULTIAPPEND (RFC 3502) is registered
(``registry.multiappend``): stored all or none, answered ``APPENDUID
uidvalidity uid-set``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .. import responses as R
from ..backend import NoSuchFolder
from ..reader import Reader
from .base import LOGGED_IN, Command, Parse, Refused, Registry, Reply, bad, no, ok

if TYPE_CHECKING:
    from ..session import Session

SYSTEM = ("\\answered", "\\flagged", "\\deleted", "\\seen", "\\draft")


class Deferred(Protocol):
    """Message data made when the command runs (CATENATE's pieces)."""

    async def resolve(self, s: "Session") -> bytes: ...


@dataclass(frozen=True)
class Message:
    flags: list[str]
    date: tuple[float, int] | None  # (epoch seconds, zone offset in minutes)
    data: bytes | Deferred


def message(r: Reader, p: Parse) -> Message:
    """``[flag-list SP] [date-time SP] append-data``."""
    flags: list[str] = []
    when = None
    if r.peek() == b"(":
        flags = r.flag_list()
        r.sp()
    if r.peek() == b'"':
        when = r.date_time()
        r.sp()
    for form in p.registry.append_data:
        data = form(r)
        if data is not None:
            return Message(flags, when, data)
    if r.peek() != b"{":
        r.expected("the message as a literal ({size})")
    return Message(flags, when, r.literal())


async def prepared(s: "Session", m: Message) -> tuple[bytes, list[str], float | None, int | None]:
    """What the folder stores for one message: its bytes (CATENATE's made
    now), flags and date; :class:`.base.Refused` for an empty message or a
    flag that cannot be set (REPLACE stores messages the same way)."""
    data = m.data if isinstance(m.data, bytes) else await m.data.resolve(s)
    if not data:
        raise Refused(no("Can't save a zero byte message."))
    flags = [f for f in m.flags if f.lower() != "\\recent"]
    for f in flags:
        if f == "\\*" or (f.startswith("\\") and f.lower() not in SYSTEM):
            raise Refused(bad(f"Invalid system flag {f}"))
    when, tz = m.date if m.date else (None, None)
    return data, flags, when, tz


@dataclass(frozen=True, kw_only=True)
class Append(Command):
    name = "APPEND"
    states = LOGGED_IN
    usage = "{cmd} needs a mailbox name and a message"

    mailbox: str
    messages: list[Message]

    @classmethod
    def parse(cls, r: Reader, p: Parse) -> "Append":
        r.sp()
        mailbox = r.mailbox()
        r.sp()
        messages = [message(r, p)]
        while p.registry.multiappend and r.take(b" "):
            messages.append(message(r, p))
        return cls(tag=p.tag, mailbox=mailbox, messages=messages)

    async def run(self, s: "Session") -> Reply:
        try:
            folder = await s.mailbox.folder(self.mailbox)
        except NoSuchFolder:
            return no("Mailbox doesn't exist", "TRYCREATE")
        items = [await prepared(s, m) for m in self.messages]
        if len(items) == 1:
            data, flags, when, tz = items[0]
            uid = await folder.append(data, flags=flags, internaldate=when, tzoffset=tz)
            return ok("Append completed.", f"APPENDUID {folder.uidvalidity} {uid}")
        uids = await folder.append_all(items)
        return ok("Append completed.", f"APPENDUID {folder.uidvalidity} {R.number_set(uids).decode()}")


def register(registry: Registry) -> None:
    registry.command(Append)
