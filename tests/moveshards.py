"""In-memory stand-ins of the shards' move endpoints, for tests of the
operator's move rounds (tests/operator with the API double, tests/envtest
with the real API server); the real endpoints are tested in tests/scale."""
from __future__ import annotations

from correo_operator import moverun


class MemoryShard(moverun.ShardClient):
    """One shard's move endpoints, in memory: fences, copies, mail.

    ``world``: what the shards share with the test: ``now`` (the clock),
    ``owners()`` (the directory in force: a shard never takes a copy of, nor
    removes, a mailbox it owns), ``blocked`` (what the target's check says)."""

    def __init__(self, shard: int, world: dict) -> None:
        super().__init__(shard, f"memory://{shard}", "", None)
        self.world = world
        self.up = True
        self.fenced: dict[str, dict] = {}
        self.imported: dict[str, dict] = {}
        self.mail: dict[str, list[str]] = {}

    async def check(self, address):
        return self.world.get("blocked", "")

    async def observe(self):
        return {"shard": self.shard, "fenced": self.fenced, "imported": self.imported} if self.up else None

    async def fence(self, address, to):
        self.fenced.setdefault(address, {"address": address, "fence": f"f{self.shard}", "since": 0})["to"] = to
        return self.fenced[address]

    async def copy_from(self, src, address, fence):
        assert self.world["owners"]().get(address) != self.shard
        self.mail[address] = list(src.mail.get(address, []))
        self.fenced.pop(address, None)
        self.imported[address] = {"address": address, "from": src.shard, "fence": fence, "digest": "d",
                                  "at": self.world["now"], "messages": len(self.mail[address])}
        return {"digest": "d", "summary": {"messages": len(self.mail[address])}}

    async def unfence(self, address):
        self.fenced.pop(address, None)
        return {}

    async def remove(self, address):
        assert self.world["owners"]().get(address) != self.shard
        self.mail.pop(address, None)
        self.fenced.pop(address, None)
        self.imported.pop(address, None)
        return {}

    async def settle(self, address):
        self.imported.pop(address, None)
        return {}
