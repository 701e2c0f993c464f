"""``correo serve mailstore`` as the pod runs it: a real process reading a
configuration folder written by ``config.dump`` and ``directory.dump``; its
side port; and what survives SIGKILL in the middle of deliveries."""
from __future__ import annotations

import asyncio
import email
import json
import poplib
import signal
import smtplib
import threading

import pytest

from correo_server.mailstore import maildir
from correo_server.mailstore.store import Store

from .delivery_support import (ALICE, BOB, CAROL, DAVE, PASSWORDS, ServerProcess, http_get, lmtp_deliver,
                               lmtp_transaction, make_config, write_config_dir)

pytestmark = pytest.mark.e2e


@pytest.fixture
def config_dir(tmp_path, tls_pair):
    cfg = make_config(tmp_path / "data", imap_enabled=True)
    return write_config_dir(tmp_path / "config", cfg, None, tls_pair)


def pop3_message_ids(port: int, user: str) -> list[str]:
    pop = poplib.POP3("127.0.0.1", port, timeout=30)
    try:
        pop.user(user)
        pop.pass_(PASSWORDS[user])
        ids = []
        for n in range(1, pop.stat()[0] + 1):
            _, lines, _ = pop.retr(n)
            ids.append(email.message_from_bytes(b"\r\n".join(lines))["Message-ID"])
        return ids
    finally:
        pop.quit()


class TestServeCommand:
    def test_serves_lmtp_pop3_and_side_port_then_stops_on_sigterm(self, config_dir, tmp_path):
        server = ServerProcess(config_dir, tmp_path)
        try:
            expected = {"lmtp", "pop3", "pop3s", "imap", "imaps", "http"}
            assert set(server.ports) == expected
            assert http_get(server.ports["http"], "/healthz") == (200, b"ok\n")
            assert http_get(server.ports["http"], "/readyz") == (200, b"ready\n")
            message = b"Subject: hi\r\nMessage-ID: <p1@example.org>\r\n\r\nhello\r\n"
            result = lmtp_deliver(server.ports["lmtp"], "x@example.org", [ALICE, BOB], message)
            assert [c for c, _ in result.replies.values()] == [250, 250]
            assert pop3_message_ids(server.ports["pop3"], ALICE) == ["<p1@example.org>"]

            status, body = http_get(server.ports["http"], "/status")
            doc = json.loads(body)
            assert status == 200 and doc["service"] == "mailstore" and doc["ready"] is True
            assert set(doc["mailboxes"]) == {ALICE, BOB, CAROL, DAVE, "erin@example.com"}
            alice = doc["mailboxes"][ALICE]
            assert alice["messages"] == 1 and alice["bytes"] > len(message)
            assert alice["quotaBytes"] == 10 * 1024 * 1024 and alice["lastDelivery"].endswith("Z")
            assert doc["mailboxes"][CAROL] == {"messages": 0, "bytes": 0, "quotaBytes": 1 << 30,
                                               "lastDelivery": None, "refused": 0, "lastRefusal": None, "junk": 0}

            status, metrics = http_get(server.ports["http"], "/metrics")
            text = metrics.decode()
            assert 'correo_mailstore_deliveries_total{result="delivered"} 2' in text
            assert 'correo_mailstore_logins_total{protocol="pop3",result="ok"} 1' in text
            assert 'correo_mailstore_sessions_total{protocol="pop3"} 1' in text
            assert f'correo_mailstore_mailbox_bytes{{mailbox="{ALICE}"}} {alice["bytes"]}' in text
            assert "correo_mailstore_delivered_bytes_total " in text
            assert "correo_mailstore_stored_bytes " in text
        finally:
            code = server.terminate()
        assert code == 0

    def test_bad_configuration_fails_with_a_message(self, tmp_path):
        import subprocess
        import sys
        (tmp_path / "correo.yaml").write_text("name: x\nhostname: y\nmailstore:\n  overQuota: maybe\n")
        proc = subprocess.run([sys.executable, "-m", "correo_operator.cli", "serve", "mailstore",
                               "--config", str(tmp_path)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2
        assert "overQuota" in proc.stderr


class TestOneMailstorePerDataFolder:
    def test_a_second_process_refuses_to_start_and_sigkill_frees_the_folder(self, config_dir, tmp_path):
        import subprocess
        import sys
        data_dir = tmp_path / "data"
        first = ServerProcess(config_dir, tmp_path)
        try:
            proc = subprocess.run([sys.executable, "-m", "correo_operator.cli", "serve", "mailstore",
                                   "--config", str(config_dir), "--log-format", "json"],
                                  capture_output=True, text=True, timeout=60)
            assert proc.returncode == 1
            assert (f"correo serve mailstore: the mail data folder {data_dir} is in use by another mailstore "
                    f"(pid {first.proc.pid})") in proc.stderr
            assert "Traceback" not in proc.stderr
            message = b"Subject: one\r\nMessage-ID: <lock1@example.org>\r\n\r\nhello\r\n"
            assert lmtp_deliver(first.ports["lmtp"], "x@example.org", [ALICE], message).replies[ALICE][0] == 250
        finally:
            first.proc.send_signal(signal.SIGKILL)  # no clean-up of any kind: the kernel drops the lock
            first.proc.wait(30)
            first.log_file.close()
        second = ServerProcess(config_dir, tmp_path)
        try:
            assert pop3_message_ids(second.ports["pop3"], ALICE) == ["<lock1@example.org>"]
            assert (data_dir / ".correo-mailstore.lock").read_text().split()[0] == str(second.proc.pid)
        finally:
            assert second.terminate() == 0


class TestCrashSafety:
    def test_sigkill_mid_delivery_loses_no_acknowledged_message(self, config_dir, tmp_path):
        server = ServerProcess(config_dir, tmp_path)
        acked: set[tuple[str, str]] = set()
        lock = threading.Lock()
        enough = threading.Event()
        body = b"".join(b"line %05d of a message long enough to take a moment to write\r\n" % i
                        for i in range(300))

        def sender(worker: int) -> None:
            try:
                with smtplib.LMTP("127.0.0.1", server.ports["lmtp"], timeout=30) as client:
                    client.ehlo()
                    for n in range(10_000):
                        mid = f"<w{worker}-{n}@example.org>"
                        message = f"Subject: crash {worker}/{n}\r\nMessage-ID: {mid}\r\n\r\n".encode() + body
                        codes = lmtp_transaction(client, "x@example.org", [ALICE, BOB], message)
                        with lock:
                            acked.update((rcpt, mid) for rcpt, code in codes.items() if code == 250)
                            if len(acked) >= 60:
                                enough.set()
            except (smtplib.SMTPException, OSError):
                return  # the server died under us: what was acknowledged is recorded

        workers = [threading.Thread(target=sender, args=(w,)) for w in range(3)]
        for w in workers:
            w.start()
        assert enough.wait(60), "deliveries too slow"
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(30)
        server.log_file.close()
        for w in workers:
            w.join(30)
        with lock:
            acknowledged = set(acked)
        assert len(acknowledged) >= 60

        restarted = ServerProcess(config_dir, tmp_path)
        try:
            present = {rcpt: pop3_message_ids(restarted.ports["pop3"], rcpt) for rcpt in (ALICE, BOB)}
        finally:
            assert restarted.terminate() == 0
        for rcpt, mid in acknowledged:
            assert mid in present[rcpt], f"acknowledged message {mid} for {rcpt} is lost"
        for rcpt, ids in present.items():
            assert len(ids) == len(set(ids)), f"duplicates in {rcpt}"

        # the index agrees with the files: one row per file, every file readable
        async def check() -> None:
            store = Store.from_config(restarted_config(config_dir))
            try:
                for rcpt in (ALICE, BOB):
                    inbox = await (await store.mailbox(rcpt, create=False)).folder("INBOX")
                    files = maildir.scan(inbox.path)
                    rows = inbox.messages()
                    assert sorted(m.base for m in rows) == sorted(files)
                    assert [m.uid for m in rows] == sorted({m.uid for m in rows})
                    assert all(m.uid < inbox.uidnext for m in rows)
                    for m in rows:
                        assert len(await inbox.read(m.uid)) == m.size
                    assert not list((inbox.path / "tmp").iterdir())
            finally:
                await store.close()

        asyncio.run(check())


def restarted_config(config_dir):
    from correo_server import config as configmod
    return configmod.load(config_dir)
