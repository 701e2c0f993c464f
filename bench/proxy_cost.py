"""The proxy's cost: IMAP through ``correo serve proxy`` against the same
load straight to the mailstore shard that owns the mailbox, same run.

Usage (from the repository root)::

    python bench/proxy_cost.py                    # 4 clients x 3 runs x 2 modes
    python bench/proxy_cost.py --clients 8 --rounds 50 --runs 5

It starts ``correo up`` with ``spec.mailstore.shards: 2`` (the real shape:
two ``correo serve mailstore --shard N`` processes and the proxy), one
mailbox per client pinned to shard 0, preloaded with ``--messages``
messages over IMAP APPEND.  Each client logs in (through the proxy on the
public IMAP port, or directly on shard 0's own IMAP port), repeats
``--rounds`` times ``SELECT INBOX; UID FETCH 1:* (FLAGS); FETCH n
(ENVELOPE); FETCH n (BODY.PEEK[]); NOOP`` and logs out; the two modes run
alternately so that the shared machine's background load hits both alike.

Figures: IMAP commands per second in each mode and their ratio (wall time:
noisy on a shared machine), and CPU per command from /proc (user + system):
the shard's, and the proxy's on top of it when proxied — the proxy's own
cost, which depends far less on what else runs.  Medians of the runs.
"""
from __future__ import annotations

import argparse
import ctypes
import imaplib
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from email.message import EmailMessage
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proccpu import tree_cpu  # noqa: E402
import nulldns  # noqa: E402  (bench/: never ask the machine's resolver)

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "bench-password-1"


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def write_yaml(folder: Path, clients: int) -> list[str]:
    addresses = [f"bench{i}@bench.test" for i in range(clients)]
    docs = [{"apiVersion": "correo.dev/v1alpha1", "kind": "MailDomain", "metadata": {"name": "bench"},
             "spec": {"domain": "bench.test", "mailstore": {"shards": 2}}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pw"}, "stringData": {"password": PASSWORD}}]
    docs += [{"apiVersion": "correo.dev/v1alpha1", "kind": "Mailbox", "metadata": {"name": a.partition("@")[0]},
              "spec": {"address": a, "passwordSecretRef": {"name": "pw"}, "shard": 0}} for a in addresses]
    folder.mkdir(parents=True)
    (folder / "bench.yaml").write_text(yaml.safe_dump_all(docs))
    return addresses


def start(data: Path, yaml_dir: Path) -> subprocess.Popen:
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
            if "proxy" in state.get("services", {}) and "relay" in state.get("services", {}):
                return proc
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit("correo up did not start in 180 s")


def message(i: int) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "someone@else.test", "bench@bench.test", f"message {i}"
    msg.set_content(("Some text of a message, long enough to be a message. " * 40) + f"\n{i}\n")
    return bytes(msg)


def preload(port: int, address: str, count: int) -> None:
    imap = imaplib.IMAP4("127.0.0.1", port)
    imap.login(address, PASSWORD)
    for i in range(count):
        imap.append("INBOX", None, None, message(i))
    imap.logout()


def client(port: int, address: str, rounds: int, messages: int, counts: list[int]) -> None:
    imap = imaplib.IMAP4("127.0.0.1", port)
    imap.login(address, PASSWORD)
    n = 1
    for r in range(rounds):
        imap.select("INBOX")
        imap.uid("FETCH", "1:*", "(FLAGS)")
        seq = str(r % messages + 1)
        imap.fetch(seq, "(ENVELOPE)")
        imap.fetch(seq, "(BODY.PEEK[])")
        imap.noop()
        n += 5
    imap.logout()
    counts.append(n + 1)


def run_once(port: int, addresses: list[str], rounds: int, messages: int, pids: dict[str, int]) -> dict:
    counts: list[int] = []
    before = {name: tree_cpu(pid)[0] for name, pid in pids.items()}
    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(port, a, rounds, messages, counts)) for a in addresses]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    cpu = {name: tree_cpu(pid)[0] - before[name] for name, pid in pids.items()}
    commands = sum(counts)
    return {"commands": commands, "per_second": commands / wall,
            **{f"{name}_ms": cpu[name] * 1000 / commands for name in cpu}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--messages", type=int, default=30)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="correo-proxy-bench-") as tmp:
        root = Path(tmp)
        addresses = write_yaml(root / "yaml", args.clients)
        proc = start(root / "data", root / "yaml")
        try:
            state = json.loads((root / "data" / "state.json").read_text())
            ports = state["ports"]
            pids = {"shard": state["services"]["mailstore-0"], "proxy": state["services"]["proxy"]}
            direct, proxied = ports["mailstore0_imap"], ports["imap"]
            for a in addresses:
                preload(direct, a, args.messages)
            results: dict[str, list[dict]] = {"direct": [], "proxy": []}
            for run in range(args.runs):
                for mode, port in (("direct", direct), ("proxy", proxied)) if run % 2 == 0 else \
                        (("proxy", proxied), ("direct", direct)):
                    results[mode].append(run_once(port, addresses, args.rounds, args.messages, pids))
            med = {mode: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for mode, rs in results.items()}
            d, p = med["direct"], med["proxy"]
            print(f"IMAP through the proxy vs straight to the shard: {args.clients} clients x {args.rounds} rounds, "
                  f"{args.runs} runs each (medians)")
            print(f"  commands/s      direct {d['per_second']:8.0f}   proxy {p['per_second']:8.0f}   "
                  f"ratio proxy/direct {p['per_second'] / d['per_second']:.2f}")
            print(f"  shard CPU/cmd   direct {d['shard_ms']:8.3f} ms   proxy {p['shard_ms']:8.3f} ms")
            print(f"  proxy CPU/cmd            {'':8}   proxy {p['proxy_ms']:8.3f} ms   "
                  f"(+{100 * p['proxy_ms'] / d['shard_ms']:.0f}% of the shard's own CPU per command)")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
