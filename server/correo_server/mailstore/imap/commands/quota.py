"""QUOTA (RFC 2087/9208): one quota root ``""`` per mailbox with its
STORAGE limit (``Mailbox.quota``, KiB), read-only: SETQUOTA is refused."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import responses as R
from ..reader import Reader
from .base import LOGGED_IN, Command, Parse, Registry, Reply, no, ok
from .folders import MailboxCommand

if TYPE_CHECKING:
    from ..session import Session


def _quota_line(s: "Session") -> bytes:
    quota = s.mailbox.quota_bytes
    used = s.mailbox.usage().bytes
    if not quota:
        return R.untagged(b'QUOTA "" ()')
    return R.untagged(b'QUOTA "" (STORAGE %d %d)' % ((used + 1023) // 1024, quota // 1024))


@dataclass(frozen=True, kw_only=True)
class GetQuotaRoot(MailboxCommand):
    name = "GETQUOTAROOT"
    capability = "QUOTA"

    async def run(self, s: "Session") -> Reply:
        if not await s.mailbox.exists(self.mailbox):
            return no("Mailbox doesn't exist", "NONEXISTENT")
        s.write(R.untagged(b"QUOTAROOT " + s.quote_mailbox(self.mailbox) + b' ""'))
        s.write(_quota_line(s))
        return ok("Getquotaroot completed.")


@dataclass(frozen=True, kw_only=True)
class GetQuota(Command):
    name = "GETQUOTA"
    states = LOGGED_IN
    usage = "{cmd} needs a quota root"

    root: str

    @classmethod
    def parse(cls, r: Reader, p: Parse) -> "GetQuota":
        r.sp()
        return cls(tag=p.tag, root=r.astring("a quota root").decode("utf-8", "replace"))

    async def run(self, s: "Session") -> Reply:
        if self.root != "":
            return no("Quota root doesn't exist.", "NONEXISTENT")
        s.write(_quota_line(s))
        return ok("Getquota completed.")


@dataclass(frozen=True, kw_only=True)
class SetQuota(Command):
    name = "SETQUOTA"
    states = LOGGED_IN
    usage = "{cmd} needs a quota root and a list of limits"

    root: str
    limits: list[tuple[str, int]]

    @classmethod
    def parse(cls, r: Reader, p: Parse) -> "SetQuota":
        r.sp()
        root = r.astring("a quota root")
        r.sp()
        limits: list[tuple[str, int]] = []

        def item() -> None:
            name = r.atom("a resource name").upper()
            r.sp()
            limits.append((name, r.number(what="a limit")))

        r.paren_list(item, what="a list of limits")
        return cls(tag=p.tag, root=root.decode("utf-8", "replace"), limits=limits)

    async def run(self, s: "Session") -> Reply:
        return no("Quotas are set by the administrator.", "NOPERM")


def register(registry: Registry) -> None:
    for cls in (GetQuotaRoot, GetQuota, SetQuota):
        registry.command(cls)
