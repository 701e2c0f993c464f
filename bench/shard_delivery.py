"""Delivery with 1 and with 3 mailstore shards, same run: the queue's LMTP
to the mailstore (one transaction per shard a message's recipients live on).

Usage (from the repository root)::

    python bench/shard_delivery.py                     # 300 messages x 3 recipients, 30 mailboxes
    python bench/shard_delivery.py --messages 1000 --recipients 5 --runs 3

Each run starts ``correo up`` (``spec.mailstore.shards`` 1, then 3, then
alternately), hands ``--messages`` messages of ``--size`` bytes, each to
``--recipients`` mailboxes, to the queue over LMTP from ``--connections``
connections, and waits until the queue's ``/status`` counts every recipient
delivered.

Figures: recipients delivered per second (wall time: on a shared 2-core
machine more shards add processes, not cores, so expect no speed-up here;
on Kubernetes each shard is its own pod) and CPU per delivered recipient
from /proc, the queue's and the mailstores' (all shards together):
what sharding costs in work.  Medians of the runs.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proccpu import tree_cpu  # noqa: E402
import nulldns  # noqa: E402  (bench/: never ask the machine's resolver)

ROOT = Path(__file__).resolve().parents[1]


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def write_yaml(folder: Path, shards: int, mailboxes: int) -> list[str]:
    addresses = [f"user{i}@bench.test" for i in range(mailboxes)]
    docs = [{"apiVersion": "correo.dev/v1alpha1", "kind": "MailDomain", "metadata": {"name": "bench"},
             "spec": {"domain": "bench.test", "mailstore": {"shards": shards}, "defaultQuota": "10Gi"}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pw"},
             "stringData": {"password": "{BCRYPT}$2b$04$AAAAAAAAAAAAAAAAAAAAAOKNr7o9V3k5l3bPzkq8bV8JYzBrJ6W2a"}}]
    docs += [{"apiVersion": "correo.dev/v1alpha1", "kind": "Mailbox", "metadata": {"name": a.partition("@")[0]},
              "spec": {"address": a, "passwordSecretRef": {"name": "pw"}}} for a in addresses]
    folder.mkdir(parents=True)
    (folder / "bench.yaml").write_text(yaml.safe_dump_all(docs))
    return addresses


def start(data: Path, yaml_dir: Path) -> tuple[subprocess.Popen, dict]:
    log = open(data.parent / "up.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "correo_operator.cli", "up", str(yaml_dir), "--data", str(data),
                             "--ephemeral-ports", "--dns", nulldns.start()],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                            preexec_fn=_die_with_parent)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"correo up exited:\n{(data.parent / 'up.log').read_text()[-4000:]}")
        try:
            state = json.loads((data / "state.json").read_text())
            if "relay" in state.get("services", {}):
                return proc, state
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit("correo up did not start in 180 s")


def delivered(state: dict) -> int:
    with urllib.request.urlopen(state["endpoints"]["queue"]["http"] + "/status", timeout=10) as resp:
        return int(json.load(resp)["totals"]["delivered"])


def send(port: int, jobs: list[list[str]], body: bytes, errors: list) -> None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
            f = sock.makefile("rb")

            def reply() -> bytes:
                while True:
                    line = f.readline()
                    if not line:
                        raise ConnectionError("the queue closed the connection")
                    if line[3:4] != b"-":
                        if not line.startswith((b"2", b"3")):
                            raise RuntimeError(line.decode(errors="replace").strip())
                        return line
            reply()
            sock.sendall(b"LHLO bench.test\r\n")
            reply()
            data = body.replace(b"\r\n.", b"\r\n..") + b".\r\n"
            for rcpts in jobs:
                sock.sendall(b"MAIL FROM:<sender@elsewhere.test>\r\n")
                reply()
                for r in rcpts:
                    sock.sendall(f"RCPT TO:<{r}>\r\n".encode())
                    reply()
                sock.sendall(b"DATA\r\n")
                reply()
                sock.sendall(data)
                for _ in rcpts:  # LMTP: one reply per recipient (RFC 2033)
                    reply()
            sock.sendall(b"QUIT\r\n")
    except Exception as exc:  # noqa: BLE001 - reported by the main thread
        errors.append(exc)


def run_once(shards: int, args, rng: random.Random) -> dict:
    with tempfile.TemporaryDirectory(prefix="correo-shard-bench-") as tmp:
        root = Path(tmp)
        addresses = write_yaml(root / "yaml", shards, args.mailboxes)
        proc, state = start(root / "data", root / "yaml")
        try:
            services = state["services"]
            stores = [pid for name, pid in services.items() if name.startswith("mailstore")]
            line = b"x" * 74 + b"\r\n"
            body = (b"From: sender@elsewhere.test\r\nSubject: bench\r\n\r\n"
                    + line * max(args.size // len(line), 1))
            jobs = [rng.sample(addresses, args.recipients) for _ in range(args.messages)]
            chunks = [jobs[i::args.connections] for i in range(args.connections)]
            expected = args.messages * args.recipients
            cpu0 = {"queue": tree_cpu(services["queue"])[0], "mailstore": sum(tree_cpu(p)[0] for p in stores)}
            started = time.monotonic()
            errors: list = []
            threads = [threading.Thread(target=send, args=(state["ports"]["queue_lmtp"], c, body, errors))
                       for c in chunks]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                sys.exit(f"handing the messages to the queue failed: {errors[0]!r}")
            while delivered(state) < expected:
                if time.monotonic() - started > 600:
                    sys.exit(f"only {delivered(state)} of {expected} delivered after 600 s")
                time.sleep(0.05)
            wall = time.monotonic() - started
            cpu = {"queue": tree_cpu(services["queue"])[0] - cpu0["queue"],
                   "mailstore": sum(tree_cpu(p)[0] for p in stores) - cpu0["mailstore"]}
            return {"per_second": expected / wall, "queue_ms": cpu["queue"] * 1000 / expected,
                    "mailstore_ms": cpu["mailstore"] * 1000 / expected}
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--recipients", type=int, default=3)
    ap.add_argument("--mailboxes", type=int, default=30)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    rng = random.Random(16)
    results: dict[int, list[dict]] = {1: [], 3: []}
    for run in range(args.runs):
        for shards in ((1, 3) if run % 2 == 0 else (3, 1)):
            results[shards].append(run_once(shards, args, rng))
    med = {s: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for s, rs in results.items()}
    one, three = med[1], med[3]
    print(f"Delivery, {args.messages} messages x {args.recipients} recipients over {args.mailboxes} mailboxes, "
          f"{args.size} B, {args.runs} runs each (medians)")
    print(f"  recipients/s     1 shard {one['per_second']:8.0f}   3 shards {three['per_second']:8.0f}   "
          f"ratio {three['per_second'] / one['per_second']:.2f}")
    print(f"  queue CPU/rcpt   1 shard {one['queue_ms']:8.3f} ms   3 shards {three['queue_ms']:8.3f} ms")
    print(f"  store CPU/rcpt   1 shard {one['mailstore_ms']:8.3f} ms   3 shards {three['mailstore_ms']:8.3f} ms "
          "(all shards)")


if __name__ == "__main__":
    main()
