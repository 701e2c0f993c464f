"""The shard side of a proxied session: connect to the owning shard, and
relay bytes both ways once both ends are logged in."""
from __future__ import annotations

import asyncio

from .. import logs, shards
from ..config import ServerConfig

log = logs.get(__name__)

CHUNK = 65536


class ShardDown(Exception):
    """The shard cannot be reached (or did not greet): its users get a
    temporary error, everyone else carries on."""


async def connect(cfg: ServerConfig, shard: int, protocol: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = shards.shard_address(cfg, shard, protocol)
    timeout = cfg.proxy.connect_timeout_seconds if cfg.proxy else 10
    try:
        return await asyncio.wait_for(asyncio.open_connection(host, port, limit=CHUNK), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        log.warning("shard_unreachable", shard=shard, protocol=protocol, host=host, port=port,
                    error=str(exc) or type(exc).__name__)
        raise ShardDown(f"shard {shard} at {host}:{port}: {exc or 'timed out'}") from None


async def read_line(reader: asyncio.StreamReader, timeout: float) -> bytes:
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
    except (OSError, asyncio.TimeoutError, ValueError) as exc:
        raise ShardDown(f"no answer: {exc or 'timed out'}") from None
    if not line:
        raise ShardDown("the shard closed the connection")
    return line


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, idle: float, counter: list[int]) -> None:
    while True:
        data = await asyncio.wait_for(src.read(CHUNK), idle)
        if not data:
            return
        dst.write(data)
        counter[0] += len(data)
        if dst.transport.get_write_buffer_size() > 4 * CHUNK:
            await dst.drain()


async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter,
                shard_r: asyncio.StreamReader, shard_w: asyncio.StreamWriter, *, idle: float) -> tuple[int, int]:
    """Copy both ways until either side closes (or nothing moves for ``idle``
    seconds); returns (bytes up, bytes down).  Closes the shard side."""
    up, down = [0], [0]
    tasks = [asyncio.create_task(_pump(client_r, shard_w, idle, up)),
             asyncio.create_task(_pump(shard_r, client_w, idle, down))]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for t in done:  # what the client or shard said last still goes out
            if t is tasks[1]:
                try:
                    await client_w.drain()
                except (ConnectionError, OSError):
                    pass
    finally:
        shard_w.close()
    return up[0], down[0]
