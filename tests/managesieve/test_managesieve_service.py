"""The mailstore service runs ManageSieve beside IMAP and POP3, as the renderer configures it."""
from __future__ import annotations

import asyncio
from dataclasses import replace

from correo_server import config as configmod
from correo_server import directory as directorymod
from correo_server import passwords
from correo_server.config import Listen
from correo_server.directory import MailboxEntry
from correo_server.mailstore.service import MailstoreService

from managesieve_support import ALICE, PASSWORD, Raw, literal, make_config


def test_the_service_listens_for_managesieve_and_stores_scripts_on_its_data_folder(tmp_path):
    cfg = make_config(tmp_path)
    cfg = replace(cfg, mailstore=replace(cfg.mailstore, managesieve_enabled=True,
                                         managesieve=Listen("127.0.0.1", 0), imap_enabled=False,
                                         pop3_enabled=False))
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / configmod.CONFIG_FILE).write_text(configmod.dump(cfg))
    h = passwords.hash_password(PASSWORD, passwords.stable_salt("t"))
    (folder / configmod.DIRECTORY_FILE).write_text(directorymod.dump([MailboxEntry(ALICE, password_hash=h)]))
    loaded = configmod.load(folder)
    assert loaded.mailstore.managesieve_enabled

    async def scenario():
        service = MailstoreService(loaded, str(folder))
        ports = await service.start()
        try:
            assert set(ports) == {"lmtp", "managesieve", "http"}

            def client_side():
                c = Raw(ports["managesieve"])
                assert c.login()[-1].startswith(b"OK")
                assert c.command(b'PUTSCRIPT "rules" ' + literal(b"keep;\r\n"))[-1].startswith(b"OK")
                assert c.command('SETACTIVE "rules"')[-1].startswith(b"OK")
                c.close()

            await asyncio.to_thread(client_side)
            metrics = service.ctx.metrics.render()
            assert 'mailstore_managesieve_scripts_total{operation="put",result="ok"} 1' in metrics
            assert 'mailstore_sessions_total{protocol="managesieve"} 1' in metrics
        finally:
            await service.stop()
        root = tmp_path / "mail" / ALICE / "correo-sieve"
        assert (root / "scripts" / "rules.sieve").read_bytes() == b"keep;\r\n"
        assert (root / "active").read_text() == "rules\n"

    asyncio.run(scenario())


def test_managesieve_is_off_unless_configured(tmp_path):
    assert not configmod.MailstoreConfig().managesieve_enabled
    assert configmod.MailstoreConfig().managesieve.port == configmod.DEFAULT_PORTS["managesieve"] == 2419
