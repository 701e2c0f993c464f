"""The proxy talks TLS to a shard and accepts only the stack's own
certificate there (pinned): a shard showing another one is "down" for the
proxy (its users get [UNAVAILABLE]), and the credential is never sent."""
from __future__ import annotations

import asyncio
import ssl

import pytest

from correo_operator.local import keys
from correo_server import config as cfgmod
from correo_server.proxy import relay


def stack_config(folder) -> cfgmod.ServerConfig:
    return cfgmod.ServerConfig(name="t", hostname="mail.scale.test", tls=cfgmod.TLSFiles(), base_dir=str(folder))


async def shard_with(cert, key):
    """A TCP server that upgrades each connection to TLS with this pair, as a shard after STARTTLS."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    async def handle(reader, writer):
        try:
            await writer.start_tls(context)
            await reader.read(1)
        except (ssl.SSLError, ConnectionError, OSError):
            pass
        writer.close()
    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize("same", [True, False])
async def test_the_shard_must_show_the_stack_s_own_certificate(tmp_path, same):
    keys.self_signed(tmp_path / "tls" / "tls.crt", tmp_path / "tls" / "tls.key", ["mail.scale.test"])
    other = tmp_path / "other"
    keys.self_signed(other / "tls.crt", other / "tls.key", ["mail.scale.test"])
    pair = (tmp_path / "tls" / "tls.crt", tmp_path / "tls" / "tls.key") if same else \
        (other / "tls.crt", other / "tls.key")
    server = await shard_with(*pair)
    try:
        cfg = stack_config(tmp_path)
        assert relay.tls_expected(cfg)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        if same:
            await relay.secure(cfg, writer, 10)
            assert writer.get_extra_info("ssl_object") is not None
        else:
            with pytest.raises(relay.ShardDown, match="not the stack's own"):
                await relay.secure(cfg, writer, 10)
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
