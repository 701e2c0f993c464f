"""The shard side of a proxied session: connect to the owning shard, and
relay bytes both ways once both ends are logged in."""
from __future__ import annotations

import asyncio
import ssl

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


def _own_certificate(cfg: ServerConfig) -> bytes | None:
    """DER of the first certificate in the stack's own ``tls.crt``."""
    if cfg.tls is None:
        return None
    try:
        pem = cfg.path(cfg.tls.cert_file).read_text(encoding="ascii")
    except OSError:
        return None
    start = pem.find("-----BEGIN CERTIFICATE-----")
    end = pem.find("-----END CERTIFICATE-----", start)
    if start < 0 or end < 0:
        return None
    return ssl.PEM_cert_to_DER_cert(pem[start:end + len("-----END CERTIFICATE-----")])


def tls_expected(cfg: ServerConfig) -> bool:
    """The shards have the stack's key pair: the proxy talks TLS to them
    (so that its credential never crosses the network in the clear)."""
    return _own_certificate(cfg) is not None


async def secure(cfg: ServerConfig, writer: asyncio.StreamWriter, timeout: float) -> None:
    """TLS with a shard after its STARTTLS/STLS went OK.  The shard must show
    the stack's own certificate (the same Secret is mounted in the proxy and
    the shards): pinned, as pod DNS names are not on it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        await asyncio.wait_for(writer.start_tls(context), timeout)
    except (ssl.SSLError, OSError, asyncio.TimeoutError) as exc:
        raise ShardDown(f"TLS with the shard failed: {exc or 'timed out'}") from None
    sslobj = writer.get_extra_info("ssl_object")
    seen = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
    if seen is None or seen != _own_certificate(cfg):
        raise ShardDown("the shard's certificate is not the stack's own (tls.crt)")


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


async def pass_through(session, protocol: str, user: str, shard: int, first_reply: bytes,
                       shard_r: asyncio.StreamReader, shard_w: asyncio.StreamWriter) -> str:
    """After the shard took the proxy's login for ``user``: count and log the
    login, give the client the shard's reply, then relay bytes both ways
    until either side ends (the same for IMAP, POP3 and ManageSieve)."""
    session.ctx.metrics.inc("proxy_logins_total", protocol=protocol, result="ok")
    session.log.info(f"{protocol}_login", user=user, shard=shard)
    session.writer.write(first_reply)
    await session.writer.drain()
    session.relaying = True
    proxy = session.ctx.config.proxy
    up, down = await relay(session.reader, session.writer, shard_r, shard_w,
                           idle=float(proxy.idle_timeout_seconds if proxy else 1800))
    session.log.info(f"{protocol}_relay_end", user=user, shard=shard, bytes_up=up, bytes_down=down)
    return "relayed"
