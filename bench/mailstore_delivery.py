#!/usr/bin/env python3
"""Mailstore delivery and POP3 retrieval: ``correo serve mailstore`` as a real
process on loopback, LMTP deliveries from several concurrent connections
(each acknowledged only after fsync), then POP3 sessions retrieving and
deleting everything.

    python bench/mailstore_delivery.py [--connections 4] [--messages 2000] [--size 4096] [--recipients 1]

Prints LMTP recipients/s and MB/s, then POP3 messages/s and MB/s.  Not a
test: nothing asserts.
"""
from __future__ import annotations

import argparse
import json
import os
import poplib
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "server"))

from correo_server import config as configmod  # noqa: E402
from correo_server import directory as directorymod  # noqa: E402
from correo_server import passwords  # noqa: E402
from correo_server.config import AuthSettings, Domain, Listen, MailstoreConfig, ServerConfig  # noqa: E402
from correo_server.directory import MailboxEntry  # noqa: E402

PASSWORD = "bench-pw"


def write_config(folder: Path, mailboxes: int) -> None:
    local = Listen("127.0.0.1", 0)
    cfg = ServerConfig(
        name="bench", hostname="mail.bench.test", domains=(Domain("bench.test"),),
        auth=AuthSettings(failure_delay_seconds=0.01),
        mailstore=MailstoreConfig(imap=local, imaps=local, pop3=local, pop3s=local, lmtp=local, http=local,
                                  data_dir=str(folder / "data"), min_free_bytes=0, imap_enabled=False),
        log_format="json")
    h = passwords.hash_password(PASSWORD, passwords.stable_salt("bench"))
    entries = [MailboxEntry(f"user{i}@bench.test", password_hash=h, quota_bytes=0) for i in range(mailboxes)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "correo.yaml").write_text(configmod.dump(cfg))
    (folder / "directory.yaml").write_text(directorymod.dump(entries))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--recipients", type=int, default=1, help="recipients per transaction (mailboxes)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="correo-bench-") as tmp:
        folder = Path(tmp)
        mailboxes = max(args.recipients, args.connections)
        write_config(folder, mailboxes)
        ports_file = folder / "ports.json"
        log = open(folder / "mailstore.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "correo_operator.cli", "serve", "mailstore",
                                 "--config", str(folder), "--ports-file", str(ports_file)],
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            while not ports_file.exists():
                if proc.poll() is not None:
                    sys.exit(f"mailstore did not start:\n{(folder / 'mailstore.log').read_text()}")
                time.sleep(0.05)
            ports = json.loads(ports_file.read_text())
            line = b"x" * 76 + b"\r\n"
            body = line * max(1, args.size // len(line))
            per_conn = args.messages // args.connections
            counts = [0] * args.connections

            def deliver(worker: int) -> None:
                with smtplib.LMTP("127.0.0.1", ports["lmtp"]) as client:
                    client.ehlo()
                    for n in range(per_conn):
                        rcpts = [f"user{(worker + k) % mailboxes}@bench.test" for k in range(args.recipients)]
                        client.mail("bench@example.org")
                        for r in rcpts:
                            client.rcpt(r)
                        msg = f"Subject: bench {worker}/{n}\r\n\r\n".encode() + body
                        codes = [client.data(msg)[0]] + [client.getreply()[0] for _ in rcpts[1:]]
                        counts[worker] += sum(c == 250 for c in codes)

            threads = [threading.Thread(target=deliver, args=(w,)) for w in range(args.connections)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - start
            delivered = sum(counts)
            octets = delivered * (len(body) + 30)
            print(f"LMTP: {delivered} recipients over {args.connections} connections in {elapsed:.2f} s: "
                  f"{delivered / elapsed:.0f} recipients/s, {octets / elapsed / 1e6:.1f} MB/s "
                  f"({args.size} B messages, {args.recipients} recipient(s) each)")

            retrieved = [0, 0]

            def fetch(i: int) -> None:
                pop = poplib.POP3("127.0.0.1", ports["pop3"])
                pop.user(f"user{i}@bench.test")
                pop.pass_(PASSWORD)
                for n in range(1, pop.stat()[0] + 1):
                    _, _, size = pop.retr(n)
                    pop.dele(n)
                    retrieved[0] += 1
                    retrieved[1] += size
                pop.quit()

            threads = [threading.Thread(target=fetch, args=(i,)) for i in range(mailboxes)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - start
            print(f"POP3: {retrieved[0]} messages retrieved and deleted by {mailboxes} sessions in {elapsed:.2f} s: "
                  f"{retrieved[0] / elapsed:.0f} messages/s, {retrieved[1] / elapsed / 1e6:.1f} MB/s")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            log.close()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
