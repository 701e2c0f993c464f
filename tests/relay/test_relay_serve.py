"""``correo serve relay --config DIR``: the command a pod runs, from the files
the renderer writes, until SIGTERM."""
from __future__ import annotations

import asyncio
import json
import signal
import sys

import pytest

from correo_server import config as configmod
from correo_server import directory as dirmod
from correo_server.config import Domain, Listen, RelayConfig, ServerConfig
from relay_helpers import in_thread, smtp_client


@pytest.mark.e2e
async def test_serve_relay_command(tmp_path, sink, mailboxes):
    config = ServerConfig(name="t", hostname="mx.example.com", domains=(Domain("example.com"),),
                          relay=RelayConfig(smtp=Listen("127.0.0.1", 0), submission=Listen("127.0.0.1", 0),
                                            smtps=Listen("127.0.0.1", 0), http=Listen("127.0.0.1", 0),
                                            queue=Listen("127.0.0.1", sink.port)))
    (tmp_path / "correo.yaml").write_text(configmod.dump(config), encoding="utf-8")
    (tmp_path / "directory.yaml").write_text(dirmod.dump(mailboxes), encoding="utf-8")
    ports_file = tmp_path / "ports.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from correo_operator.cli import main; raise SystemExit(main())",
        "serve", "relay", "--config", str(tmp_path), "--ports-file", str(ports_file), "--log-format", "json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        for _ in range(200):
            if ports_file.exists() or proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        assert ports_file.exists(), (await proc.stderr.read()).decode()
        ports = json.loads(ports_file.read_text())
        assert set(ports) == {"smtp", "submission", "http"}  # no TLS: no smtps

        def send():
            with smtp_client(ports["smtp"]) as client:
                return client.sendmail("someone@foreign.example", ["alice@example.com"], b"Subject: x\r\n\r\nx\r\n")

        assert await in_thread(send) == {}
        assert [m.rcpt_tos for m in sink.messages] == [["alice@example.com"]]
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, stderr.decode()
    events = [json.loads(line)["event"] for line in stderr.decode().splitlines() if line.startswith("{")]
    assert "message_accepted" in events and events[-1] == "service_stopped"
