"""ID (RFC 2971): the client says who it is (logged), the server answers
with its name and version.  Valid in any state."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import responses as R
from ..reader import Reader
from .base import ANY, Command, Parse, Registry, Reply, When, ok

if TYPE_CHECKING:
    from ..session import Session

MAX_PAIRS = 30


@dataclass(frozen=True, kw_only=True)
class Id(Command):
    name = "ID"
    states = ANY
    capability = "ID"
    capability_when = When.ALWAYS
    usage = "{cmd} needs a list of field/value pairs, or NIL"

    params: dict[str, bytes | None] | None

    @classmethod
    def parse(cls, r: Reader, p: Parse) -> "Id":
        r.sp()
        if r.take(b"NIL"):
            return cls(tag=p.tag, params=None)
        pairs: list[bytes | None] = []

        def item() -> None:
            pairs.append(r.nstring())

        r.paren_list(item, what="a list of field/value pairs, or NIL")
        if len(pairs) % 2 or len(pairs) > 2 * MAX_PAIRS:
            r.fail_usage(f"ID takes field/value pairs (at most {MAX_PAIRS})")
        params = {(pairs[i] or b"").decode("utf-8", "replace"): pairs[i + 1] for i in range(0, len(pairs), 2)}
        return cls(tag=p.tag, params=params)

    async def run(self, s: "Session") -> Reply:
        from ..session import VERSION

        if self.params:
            s.client_id = {k: (v.decode("utf-8", "replace") if v is not None else None)
                           for k, v in self.params.items()}
            s.log.info("imap_client_id", client={k[:30]: (v or "")[:80] for k, v in list(s.client_id.items())[:10]})
        s.write(R.untagged(b"ID (" + b" ".join(R.string(x) for x in (
            "name", "correo", "version", VERSION, "vendor", "correo")) + b")"))
        return ok("ID completed.")


def register(registry: Registry) -> None:
    registry.command(Id)
