"""COMPRESS=DEFLATE (RFC 4978): after ``COMPRESS DEFLATE`` both directions
of the connection are raw DEFLATE streams.  Mail and FETCH responses are
text; clients that sync whole folders (mbsync, Thunderbird, K-9) ask for it
after login and move a fraction of the octets.

The tagged ``OK`` goes out uncompressed; everything after it, both ways, is
compressed (the connection, :mod:`..server`, does the work).  Offered after
login only, as Dovecot does: before login there is nothing worth
compressing and a compressed stream would hide the login from no one.
Asked twice: ``NO [COMPRESSIONACTIVE]``; another mechanism: ``BAD``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import responses as R
from ..reader import Reader
from .base import LOGGED_IN, Command, Parse, Registry, Reply, bad, no

if TYPE_CHECKING:
    from ..session import Session

MECHANISM = "DEFLATE"


@dataclass(frozen=True, kw_only=True)
class Compress(Command):
    name = "COMPRESS"
    states = LOGGED_IN
    capability = "COMPRESS=" + MECHANISM
    usage = "{cmd} needs a mechanism: COMPRESS DEFLATE"

    mechanism: str

    @classmethod
    def parse(cls, r: Reader, p: Parse) -> "Compress":
        r.sp()
        return cls(tag=p.tag, mechanism=r.atom("a compression mechanism"))

    async def run(self, s: "Session") -> Reply | None:
        if self.mechanism.upper() != MECHANISM:
            return bad(f"Unknown compression mechanism {self.mechanism[:30]} (this server has DEFLATE)")
        if s.ch.compress_active:
            return no("DEFLATE is active already", "COMPRESSIONACTIVE")
        s.write(R.tagged(self.tag, "OK", "DEFLATE active"))
        await s.ch.flush()
        s.ch.start_compress()
        s.log.info("imap_compress", mechanism=MECHANISM)
        return None


def register(registry: Registry) -> None:
    registry.command(Compress)
