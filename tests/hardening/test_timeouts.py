"""Clients that never log in are not kept: every listener where a login is
needed disconnects a client that has not logged in ``auth.loginTimeoutSeconds``
after connecting (Dovecot's 3 minutes), even one that keeps trickling
bytes; after login the protocols' own idle timeouts apply."""
from __future__ import annotations

import asyncio

import pytest

from correo_server.mailstore.service import MailstoreService
from correo_server.relay.service import RelayService

from hardening_support import Raw, mailstore_config, relay_config, write_directory

LOGIN_TIMEOUT = 1


@pytest.fixture
async def services(tmp_path):
    write_directory(tmp_path / "relay")
    relay = RelayService(relay_config(tmp_path / "relay", auth={"login_timeout_seconds": LOGIN_TIMEOUT}),
                         str(tmp_path / "relay"), handoff_timeout=5.0, grace=1.0)
    write_directory(tmp_path / "ms")
    mailstore = MailstoreService(mailstore_config(tmp_path / "ms", tmp_path / "mail",
                                                  auth={"login_timeout_seconds": LOGIN_TIMEOUT}), str(tmp_path / "ms"))
    ports = {f"relay-{k}": v for k, v in (await relay.start()).items()} | await mailstore.start()
    yield ports
    await mailstore.stop()
    await relay.stop()


async def trickle_until_closed(client: Raw, limit: float = 20.0) -> tuple[float, bytes]:
    """Send a byte of a never-ending command line every 0.2 s until the
    server hangs up: (seconds it took, what the server said meanwhile)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    said = b""
    while loop.time() - started < limit:
        try:
            client.writer.write(b"x")
            await client.writer.drain()
            chunk = await asyncio.wait_for(client.reader.read(4096), 0.2)
        except asyncio.TimeoutError:
            continue
        except ConnectionError:
            break
        if not chunk:
            break
        said += chunk
    return loop.time() - started, said


class TestNoLoginInTime:
    @pytest.mark.parametrize("listener, farewell", [
        ("imap", b"* BYE Disconnected: no login within 1 seconds."),
        ("pop3", b"-ERR Disconnected: no login within 1 seconds."),
        ("managesieve", b'BYE "Disconnected: no login within 1 seconds."'),
        ("relay-submission", b"421 4.4.2 mx.example.com Error: no login within 1 seconds"),
    ])
    async def test_a_client_trickling_bytes_without_logging_in_is_disconnected(self, services, listener, farewell):
        client = await Raw.connect(services[listener])
        await asyncio.sleep(0.1)
        took, said = await trickle_until_closed(client)
        assert farewell in said
        assert took < 10
        client.close()

    async def test_port_25_keeps_rfc_5321s_five_minutes_for_a_client_that_talks(self, services):
        client = await Raw.connect(services["relay-smtp"])
        await client.reply()
        for _ in range(int(LOGIN_TIMEOUT / 0.2) + 5):
            assert (await client.cmd("NOOP"))[0] == 250
            await asyncio.sleep(0.2)
        client.close()

    async def test_a_logged_in_imap_session_is_not_cut_by_the_login_timeout(self, services):
        client = await Raw.connect(services["imap"])
        await client.line()
        await client.send(b'a LOGIN alice@example.com "alice-secret"\r\n')
        assert (await client.line()).startswith(b"a OK")
        await asyncio.sleep(LOGIN_TIMEOUT + 1.0)
        await client.send(b"b NOOP\r\n")
        assert (await client.line()).startswith(b"b OK")
        client.close()
