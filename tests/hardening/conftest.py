"""Fixtures for the hardening tests: in-process servers with small
configurations (a relay, a mailstore), a raw line client for hostile input,
and helpers to read a process's memory."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # for hardening_support, whatever the import mode

import pytest  # noqa: E402

from hardening_support import mailstore_config, write_directory  # noqa: E402


@pytest.fixture
async def mailstore(tmp_path):
    """A running mailstore (LMTP, IMAP, POP3, ManageSieve, with TLS) in this
    process: ``(service, ports)``."""
    from correo_server.mailstore.service import MailstoreService

    config_dir = tmp_path / "mailstore"
    write_directory(config_dir)
    service = MailstoreService(mailstore_config(config_dir, tmp_path / "mail"), str(config_dir))
    ports = await service.start()
    yield service, ports
    await service.stop()
