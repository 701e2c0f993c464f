"""Debian's fetchmail retrieving over POP3: STLS on the plain port (it upgrades
whenever STLS is offered), implicit TLS on the POP3S port, UIDL-based
"keep" mode that fetches only what is new, and delete-after-retrieval."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .delivery_support import ALICE, PASSWORDS, lmtp_deliver

pytestmark = pytest.mark.skipif(shutil.which("fetchmail") is None, reason="fetchmail is not installed (scripts/setup-test-env installs it)")


def message(n: int) -> bytes:
    return (f"From: sender@example.org\r\nSubject: fetch {n}\r\nMessage-ID: <f{n}@example.org>\r\n\r\n"
            f"body of {n}\r\n.leading dot\r\n" + "ü" * 3 + "\r\n").encode()


def fetchmail(tmp_path: Path, port: int, *, keep: bool, implicit_tls: bool = False) -> tuple[int, list[Path], str]:
    """Run fetchmail once; returns (exit status, files its MDA wrote, log)."""
    out = tmp_path / "fetched"
    out.mkdir(exist_ok=True)
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        "set no syslog\n"
        f"poll 127.0.0.1 protocol POP3 port {port} uidl\n"
        f'    user "{ALICE}" there with password "{PASSWORDS[ALICE]}" is "reader" here\n'
        f"    {'keep' if keep else 'nokeep'}\n"
        f"    {'ssl' if implicit_tls else ''}\n"
        "    no sslcertck\n"
        f"    mda \"sh -c 'cat > $(mktemp {out}/msg.XXXXXX)'\"\n")
    rc.chmod(0o600)  # fetchmail refuses an rc file others can read
    env = dict(os.environ, HOME=str(tmp_path))
    proc = subprocess.run(["fetchmail", "-v", "--nodetach", "-f", str(rc), "-i", str(tmp_path / "ids"),
                           "--pidfile", str(tmp_path / "fetchmail.pid")],
                          env=env, capture_output=True, text=True, timeout=60)
    return proc.returncode, sorted(out.iterdir()), proc.stdout + proc.stderr


def test_keep_mode_fetches_only_new_messages_over_stls(mailstore, tmp_path):
    for n in (1, 2):
        assert lmtp_deliver(mailstore.ports["lmtp"], "sender@example.org", [ALICE], message(n)).replies[ALICE][0] == 250
    status, files, log = fetchmail(tmp_path, mailstore.ports["pop3"], keep=True)
    assert status == 0, log
    assert "POP3> STLS" in log and "upgrade to TLS succeeded" in log
    assert len(files) == 2
    stored = [mailstore.read(ALICE, m.uid) for m in mailstore.inbox(ALICE)[1]]
    fetched = [f.read_bytes() for f in files]
    # fetchmail adds its Received: header and hands the MDA LF line ends
    assert all(data.startswith(b"Received: ") for data in fetched)
    for original in stored:
        assert sum(data.endswith(original.replace(b"\r\n", b"\n")) for data in fetched) == 1

    status, files, log = fetchmail(tmp_path, mailstore.ports["pop3"], keep=True)
    assert status == 1, log  # 1: no new mail
    assert len(files) == 2

    lmtp_deliver(mailstore.ports["lmtp"], "sender@example.org", [ALICE], message(3))
    status, files, log = fetchmail(tmp_path, mailstore.ports["pop3"], keep=True)
    assert status == 0, log
    assert len(files) == 3
    assert len(mailstore.inbox(ALICE)[1]) == 3  # kept on the server


def test_fetch_and_delete_over_pop3s(mailstore, tmp_path):
    for n in (1, 2, 3):
        lmtp_deliver(mailstore.ports["lmtp"], "sender@example.org", [ALICE], message(n))
    status, files, log = fetchmail(tmp_path, mailstore.ports["pop3s"], keep=False, implicit_tls=True)
    assert status == 0, log
    assert "STLS" not in log  # TLS from the first byte
    assert len(files) == 3
    assert mailstore.inbox(ALICE)[1] == []
    assert mailstore.ctx.metrics.value("mailstore_pop3_messages_deleted_total") == 3
