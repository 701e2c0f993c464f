"""A relay or mailstore of the hardening tests in a process of its own, so
that its resident memory can be measured alone (:mod:`test_memory_bounds`).

``python serve_inproc.py relay|mailstore WORKDIR``: builds the service
from :mod:`hardening_support`'s small configuration (with
``CORREO_TEST_CONFIG``, a JSON object of config overrides for the service's
section), writes its ports to ``WORKDIR/ports.json`` and runs until
SIGTERM.  It dies with its parent (``PR_SET_PDEATHSIG``), so that a killed
pytest leaves nothing behind."""
from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


async def main(kind: str, workdir: Path) -> None:
    from hardening_support import mailstore_config, relay_config, write_directory

    overrides = json.loads(os.environ.get("CORREO_TEST_CONFIG", "{}"))
    config_dir = workdir / "config"
    write_directory(config_dir)
    if kind == "relay":
        from correo_server.relay.service import RelayService
        service = RelayService(relay_config(config_dir, **overrides), str(config_dir), handoff_timeout=5.0,
                               grace=1.0)
    else:
        from correo_server.mailstore.service import MailstoreService
        service = MailstoreService(mailstore_config(config_dir, workdir / "mail", **overrides), str(config_dir))
    ports = await service.start()
    tmp = workdir / "ports.json.tmp"
    tmp.write_text(json.dumps(ports))
    os.replace(tmp, workdir / "ports.json")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await service.stop()


if __name__ == "__main__":
    die_with_parent()
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
