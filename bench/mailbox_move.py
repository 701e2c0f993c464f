"""Seconds to move a mailbox of 10,000 messages between mailstore shards,
and Dovecot's ``doveadm backup`` (dsync) copying the same Maildir, same run.

Usage (from the repository root)::

    python bench/mailbox_move.py                    # 10,000 messages of 4 KiB, 2 runs
    python bench/mailbox_move.py --messages 2000 --runs 3 --no-dovecot

Each run fills one mailbox of shard 0 with ``--messages`` messages (written
with the store before ``correo up`` starts: the fill is not timed), starts
``correo up`` with 2 shards, pins the mailbox to shard 1 in the YAML and
measures until ``directory.yaml`` names shard 1 (the mailbox is served
again), then until the old copy is gone (``CORREO_MOVE_GRACE_SECONDS=0``).
Figures: wall seconds (pin → flip; the copy alone, from the orchestrator's
log), messages per second, and CPU seconds of the two shards and of
``correo up`` (the orchestrator relays the stream, over TLS: ``correo up``
always has a key pair) from /proc.

The peer: Dovecot (``dovecot -F`` with a static userdb) indexes the same
Maildir first (not timed), then ``doveadm backup -u USER maildir:DEST``
copies it to an empty Maildir, timed, with its CPU.  Nothing asserts; the
machine is shared, so compare the two within one run (the ratio).
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proccpu import tree_cpu  # noqa: E402
import nulldns  # noqa: E402  (bench/: never ask the machine's resolver)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "server"))
sys.path.insert(0, str(ROOT / "operator"))

from correo_operator import placement  # noqa: E402
from correo_server.mailstore.store import Store  # noqa: E402

DOMAIN = "bench.test"


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def mover_address() -> str:
    return next(a for a in (f"user{i}@{DOMAIN}" for i in range(100)) if placement.rendezvous(a, 2) == 0)


def write_yaml(folder: Path, address: str, pin: int | None) -> None:
    docs = [{"apiVersion": "correo.dev/v1alpha1", "kind": "MailDomain", "metadata": {"name": "bench"},
             "spec": {"domain": DOMAIN, "mailstore": {"shards": 2}, "defaultQuota": "10Gi"}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pw"}, "stringData": {"password": "x" * 12}},
            {"apiVersion": "correo.dev/v1alpha1", "kind": "Mailbox", "metadata": {"name": "mover"},
             "spec": {"address": address, "passwordSecretRef": {"name": "pw"},
                      **({"shard": pin} if pin is not None else {})}}]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench.yaml").write_text(yaml.safe_dump_all(docs))


def message(i: int, size: int) -> bytes:
    line = b"x" * 74 + b"\r\n"
    return (f"From: sender@elsewhere.test\r\nTo: mover@{DOMAIN}\r\nSubject: message {i}\r\n"
            f"Message-ID: <{i}@bench.test>\r\n\r\n").encode() + line * max(size // len(line), 1)


async def fill(data_dir: Path, address: str, count: int, size: int) -> None:
    store = Store(data_dir)
    try:
        inbox = await (await store.mailbox(address)).folder("INBOX")
        for start in range(0, count, 500):
            await inbox.append_many([message(i, size) for i in range(start, min(start + 500, count))], delivery=True)
    finally:
        await store.close()


def start(data: Path, yaml_dir: Path) -> tuple[subprocess.Popen, dict, Path]:
    log_path = data.parent / "up.log"
    proc = subprocess.Popen([sys.executable, "-m", "correo_operator.cli", "up", str(yaml_dir), "--data", str(data),
                             "--ephemeral-ports", "--dns", nulldns.start()],
                            stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, cwd=ROOT,
                            preexec_fn=_die_with_parent, env={**os.environ, "CORREO_MOVE_GRACE_SECONDS": "0"})
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"correo up exited:\n{log_path.read_text()[-4000:]}")
        try:
            state = json.loads((data / "state.json").read_text())
            if "relay" in state.get("services", {}):
                return proc, state, log_path
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit("correo up did not start in 180 s")


def owner(data: Path, address: str) -> int | None:
    try:
        text = (data / "config" / "directory.yaml").read_text()
    except OSError:
        return None
    return placement.shards_in_directory(text).get(address)


def correo_once(args) -> dict:
    address = mover_address()
    with tempfile.TemporaryDirectory(prefix="correo-move-bench-") as tmp:
        root = Path(tmp)
        data = root / "data"
        write_yaml(root / "yaml", address, None)
        asyncio.run(fill(data / "mail", address, args.messages, args.size))
        proc, state, log_path = start(data, root / "yaml")
        try:
            shards = [state["services"][f"mailstore-{i}"] for i in range(2)]
            cpu0 = [tree_cpu(p)[0] for p in shards] + [tree_cpu(proc.pid)[0]]
            started = time.monotonic()
            write_yaml(root / "yaml", address, 1)  # `correo up` watches the YAML
            while owner(data, address) != 1:
                if time.monotonic() - started > 900 or proc.poll() is not None:
                    sys.exit(f"the move did not finish:\n{log_path.read_text()[-4000:]}")
                time.sleep(0.02)
            flipped = time.monotonic() - started
            while (data / "mail" / address).exists():
                if time.monotonic() - started > 900:
                    sys.exit("the old copy was not removed")
                time.sleep(0.05)
            cleaned = time.monotonic() - started
            cpu1 = [tree_cpu(p)[0] for p in shards] + [tree_cpu(proc.pid)[0]]
            copied = [float(m) for m in re.findall(r"move_copied .*?seconds=([0-9.]+)", log_path.read_text())]
            up_total = cpu1[2] - cpu0[2]
            shard_cpu = [cpu1[i] - cpu0[i] for i in range(2)]
            return {"flip_s": flipped, "clean_s": cleaned, "copy_s": copied[-1] if copied else float("nan"),
                    "source_cpu": shard_cpu[0], "target_cpu": shard_cpu[1],
                    # correo up's tree includes the shards: its own share is what is left
                    "orchestrator_cpu": up_total - sum(shard_cpu)}
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


DOVECOT_CONF = """\
protocols =
base_dir = {run}
state_dir = {run}
ssl = no
log_path = {base}/dovecot.log
mail_location = maildir:{mail}/%u
first_valid_uid = 1
default_login_user = nobody
default_internal_user = nobody
namespace inbox {{
  inbox = yes
  separator = /
}}
passdb {{
  driver = static
  args = nopassword=y
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={mail}/%u
}}
"""


def dovecot_once(args) -> dict | None:
    if not (shutil.which("dovecot") and shutil.which("doveadm")):
        print("  (Dovecot not installed: apt-get install dovecot-core for the peer figures)")
        return None
    address = mover_address()
    with tempfile.TemporaryDirectory(prefix="correo-move-bench-dovecot-") as tmp:
        base = Path(tmp)
        os.chmod(base, 0o755)
        mail, run = base / "mail", base / "run"
        run.mkdir()
        asyncio.run(fill(mail, address, args.messages, args.size))
        src = mail / address
        for p in [src, *src.rglob("*")]:  # Dovecot's own files only: it indexes from the Maildir
            if p.name.startswith("correo-"):
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
        subprocess.run(["chown", "-R", "nobody:nogroup", str(mail)], check=True)
        conf = base / "dovecot.conf"
        conf.write_text(textwrap.dedent(DOVECOT_CONF.format(run=run, base=base, mail=mail)))
        proc = subprocess.Popen(["dovecot", "-F", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                stderr=open(base / "dovecot.stderr", "wb"), preexec_fn=_die_with_parent)
        try:
            deadline = time.monotonic() + 30
            while not (run / "auth-userdb").exists():
                if time.monotonic() > deadline or proc.poll() is not None:
                    print(f"  (Dovecot did not start: {(base / 'dovecot.stderr').read_text()[-500:]})")
                    return None
                time.sleep(0.1)
            doveadm = ["doveadm", "-c", str(conf)]
            subprocess.run([*doveadm, "force-resync", "-u", address, "*"], check=True, capture_output=True)
            subprocess.run([*doveadm, "mailbox", "status", "-u", address, "messages", "INBOX"], check=True,
                           capture_output=True)
            dest = base / "dest"
            dest.mkdir()
            shutil.chown(dest, "nobody", "nogroup")
            cpu0 = time.monotonic(), os.times()
            job = subprocess.Popen([*doveadm, "backup", "-u", address, f"maildir:{dest}/Maildir"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            _, err = job.communicate(timeout=900)
            wall = time.monotonic() - cpu0[0]
            t1 = os.times()
            if job.returncode != 0:
                print(f"  (doveadm backup failed: {err.decode(errors='replace')[-500:]})")
                return None
            copied = len(list((dest / "Maildir" / "cur").iterdir())) + len(list((dest / "Maildir" / "new").iterdir()))
            return {"wall_s": wall, "cpu": (t1.children_user - cpu0[1].children_user)
                    + (t1.children_system - cpu0[1].children_system), "copied": copied}
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--no-dovecot", action="store_true")
    args = ap.parse_args()
    correo, dovecot = [], []
    for _ in range(args.runs):
        correo.append(correo_once(args))
        if not args.no_dovecot:
            d = dovecot_once(args)
            if d is not None:
                dovecot.append(d)
    med = {k: statistics.median(r[k] for r in correo) for k in correo[0]}
    n = args.messages
    print(f"Moving a mailbox of {n} messages of {args.size} B between 2 shards on correo up, "
          f"{args.runs} runs (medians)")
    print(f"  pin -> served on the new shard  {med['flip_s']:7.2f} s   ({n / med['flip_s']:,.0f} messages/s)")
    print(f"  of which the copy (export, stream, import, verify) {med['copy_s']:7.2f} s")
    print(f"  pin -> old copy removed (grace 0)  {med['clean_s']:7.2f} s")
    print(f"  CPU: source shard {med['source_cpu']:.2f} s, target shard {med['target_cpu']:.2f} s, "
          f"orchestrator {med['orchestrator_cpu']:.2f} s")
    if dovecot:
        dmed = {k: statistics.median(r[k] for r in dovecot) for k in ("wall_s", "cpu")}
        total_cpu = med["source_cpu"] + med["target_cpu"] + med["orchestrator_cpu"]
        print(f"Dovecot doveadm backup (dsync) of the same mailbox to an empty Maildir: {dmed['wall_s']:.2f} s, "
              f"CPU {dmed['cpu']:.2f} s ({dovecot[-1]['copied']} messages copied)")
        print(f"  ratio correo copy / dsync wall {med['copy_s'] / dmed['wall_s']:.2f}, "
              f"CPU {total_cpu / dmed['cpu']:.2f}")


if __name__ == "__main__":
    main()
