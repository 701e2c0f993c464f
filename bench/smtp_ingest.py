#!/usr/bin/env python3
"""SMTP ingest: Postfix's ``smtp-source`` into correo (relay → queue →
mailstore) and, in the same run, into Postfix delivering to a Maildir on
loopback; both timed until every message is in the mailbox.

    .venv/bin/python bench/smtp_ingest.py [--sessions 10] [--messages 2000] [--size 2048]

Prints messages/s for both and the ratio (correo / Postfix).  Needs Debian's
``postfix`` (for ``smtp-source`` and the baseline; the baseline needs root
for Postfix's ``virtual`` delivery agent).  Not a test: nothing asserts.

Both sides do the same durable work: correo acknowledges a message only
after the queue has fsynced it, and stores it in a Maildir with fsync;
Postfix fsyncs its queue file and its Maildir file.
"""
from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BENCH_YAML = textwrap.dedent("""\
    apiVersion: correo.dev/v1alpha1
    kind: MailDomain
    metadata: {name: bench}
    spec:
      domain: bench.test
      relay:
        rateLimit: {messages: 100000000, periodSeconds: 1}
        maxRecipients: 1000
    ---
    apiVersion: correo.dev/v1alpha1
    kind: Mailbox
    metadata: {name: user}
    spec:
      address: user@bench.test
      quota: 100Gi
      passwordSecretRef: {name: user-password}
    ---
    apiVersion: v1
    kind: Secret
    metadata: {name: user-password}
    stringData: {password: bench-password}
    """)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


def smtp_source(port: int, args) -> float:
    start = time.monotonic()
    subprocess.run(["smtp-source", "-s", str(args.sessions), "-m", str(args.messages), "-l", str(args.size),
                    "-f", "sender@remote.test", "-t", "user@bench.test", f"127.0.0.1:{port}"],
                   check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def count_maildir(root: Path) -> int:
    n = 0
    for sub in ("new", "cur"):
        for d in root.rglob(sub):
            try:
                n += sum(1 for _ in os.scandir(d))
            except OSError:
                pass
    return n


# ---------------------------------------------------------------------------

def run_correo(args, work: Path) -> dict:
    yaml_dir = work / "correo-yaml"
    yaml_dir.mkdir()
    (yaml_dir / "bench.yaml").write_text(BENCH_YAML)
    data = work / "correo-data"
    log = open(work / "correo.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "correo_operator.cli", "up", str(yaml_dir), "--data", str(data),
                             "--ephemeral-ports", "--log-format", "json"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
    try:
        def state():
            try:
                s = json.loads((data / "state.json").read_text())
                return s if len(s.get("services", {})) == 3 else None
            except (OSError, ValueError):
                return None
        st = wait(state, 60, "correo up")
        status_url = st["endpoints"]["mailstore"]["http"] + "/status"

        def stored() -> int:
            try:
                with urllib.request.urlopen(status_url, timeout=5) as r:
                    doc = json.loads(r.read())
                return doc["mailboxes"]["user@bench.test"]["messages"]
            except (OSError, KeyError, ValueError):
                return 0

        start = time.monotonic()
        accept = smtp_source(st["ports"]["smtp"], args)
        wait(lambda: stored() >= args.messages, 600, "correo to store every message", 0.1)
        total = time.monotonic() - start
        return {"accept_seconds": accept, "total_seconds": total}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def run_postfix(args, work: Path) -> dict | None:
    if not shutil.which("postfix") or os.geteuid() != 0:
        print("postfix baseline skipped: needs Debian's postfix and root", file=sys.stderr)
        return None
    base = work / "postfix"
    etc, spool, mail, datadir = base / "etc", base / "spool", base / "mail", base / "data"
    for d in (etc, spool, mail, datadir):
        d.mkdir(parents=True)
    nobody = 65534
    os.chown(mail, nobody, nobody)
    pf = pwd.getpwnam("postfix")
    os.chown(datadir, pf.pw_uid, pf.pw_gid)  # postfix insists on owning its data directory
    os.chmod(base, 0o755)
    os.chmod(work, 0o755)
    port = free_port()
    shutil.copy("/etc/postfix/master.cf", etc / "master.cf")
    if Path("/etc/postfix/dynamicmaps.cf").exists():
        shutil.copy("/etc/postfix/dynamicmaps.cf", etc / "dynamicmaps.cf")
    master = (etc / "master.cf").read_text().splitlines()
    master = [f"127.0.0.1:{port} inet n - n - - smtpd" if line.startswith("smtp      inet") else line
              for line in master]
    (etc / "master.cf").write_text("\n".join(master) + "\n")
    (etc / "main.cf").write_text(textwrap.dedent(f"""\
        compatibility_level = 3.6
        queue_directory = {spool}
        data_directory = {datadir}
        inet_interfaces = 127.0.0.1
        inet_protocols = ipv4
        myhostname = bench-postfix.test
        mydestination =
        mynetworks = 127.0.0.0/8
        smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
        virtual_mailbox_domains = bench.test
        virtual_mailbox_base = {mail}
        virtual_mailbox_maps = static:user/
        virtual_uid_maps = static:{nobody}
        virtual_gid_maps = static:{nobody}
        virtual_destination_concurrency_limit = 20
        maillog_file = {base}/postfix.log
        maillog_file_prefixes = {base}
        """))
    subprocess.run(["postfix", "-c", str(etc), "start"], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    pid_file = spool / "pid" / "master.pid"
    try:
        wait(lambda: pid_file.exists() and pid_file.read_text().strip(), 30, "postfix master")

        def listening():
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0
        wait(listening, 30, "postfix smtpd")
        start = time.monotonic()
        accept = smtp_source(port, args)
        wait(lambda: count_maildir(mail) >= args.messages, 600, "postfix to deliver every message", 0.1)
        total = time.monotonic() - start
        return {"accept_seconds": accept, "total_seconds": total}
    finally:
        try:
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)  # stop it by PID
        except (OSError, ValueError):
            pass
        time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=10, help="parallel SMTP sessions (smtp-source -s)")
    parser.add_argument("--messages", type=int, default=2000, help="messages in all (smtp-source -m)")
    parser.add_argument("--size", type=int, default=2048, help="message size in bytes (smtp-source -l)")
    args = parser.parse_args()
    if not shutil.which("smtp-source"):
        raise SystemExit("smtp-source not found: apt-get install postfix")
    work = Path(tempfile.mkdtemp(prefix="correo-bench-"))
    try:
        print(f"smtp-source -s {args.sessions} -m {args.messages} -l {args.size}, on {os.cpu_count()} cores")
        correo = run_correo(args, work)
        print(f"correo : accepted in {correo['accept_seconds']:.2f}s, all stored in {correo['total_seconds']:.2f}s"
              f"  → {args.messages / correo['total_seconds']:.0f} messages/s end to end,"
              f" {args.messages / correo['accept_seconds']:.0f} messages/s accepted")
        postfix = run_postfix(args, work)
        if postfix:
            print(f"postfix: accepted in {postfix['accept_seconds']:.2f}s, all stored in {postfix['total_seconds']:.2f}s"
                  f"  → {args.messages / postfix['total_seconds']:.0f} messages/s end to end,"
                  f" {args.messages / postfix['accept_seconds']:.0f} messages/s accepted")
            print(f"ratio correo/postfix (end to end): {postfix['total_seconds'] / correo['total_seconds']:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
