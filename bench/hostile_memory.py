"""Resident memory of the relay and the mailstore under issue 10's hostile
clients: open DATA transfers on port 25 (no login) held and aborted over
repeated rounds, and 26 MiB pre-login IMAP literals.  Prints the idle, peak
and after-round ``VmRSS`` of each service (each in a process of its own).

    .venv/bin/python bench/hostile_memory.py                       # this checkout
    .venv/bin/python bench/hostile_memory.py --server /work/main/server   # another one, for a before/after

Defaults are issue 10's attack: 14 connections x 24 MiB, 4 rounds; IMAP 11 x
26 MiB.  ``--connections``, ``--mib``, ``--rounds`` scale it.  Dovecot (when
installed) takes the same IMAP attack in the same run, its whole process
tree's RSS measured (``--no-dovecot`` skips it).

Figures (2 shared cores, loaded; 14 x 24 MiB x 3 rounds, 11 x 26 MiB):

    relay before (55c85df^): idle 63 MiB; peaks 592, 1093, 1676 MiB, not given back
    relay now:               idle 61 MiB; peaks 63, 62, 63 MiB; 62 MiB after each round
    mailstore now:           idle 60 MiB; peak 60 MiB (the literal is refused before it is sent)"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "hardening"))

import time  # noqa: E402

from hostile import MiB, Sampler, ServiceProcess, open_connections, open_data_round, prelogin_literal  # noqa: E402


def tree_rss(root: int) -> int:
    """Resident memory of ``root`` and every process below it (Dovecot's
    master, login and auth processes)."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree = {root}
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    total = 0
    for pid in tree:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def dovecot_under_attack(connections: int) -> tuple[int, int, int] | None:
    """Dovecot's tree RSS idle, at its peak and after, under the same IMAP
    attack; None when Dovecot is not installed."""
    if shutil.which("dovecot") is None:
        return None
    sys.path.insert(0, str(ROOT / "bench"))
    from imap_load import start_dovecot, stop, wait_port

    with tempfile.TemporaryDirectory(prefix="correo-hostile-dovecot-") as tmp:
        proc, port = start_dovecot(Path(tmp), ["alice@example.com"])
        try:
            asyncio.run(wait_port(port, proc, "dovecot"))
            idle = tree_rss(proc.pid)
            peak = [idle]
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.1):
                    peak[0] = max(peak[0], tree_rss(proc.pid))

            thread = threading.Thread(target=sample, daemon=True)
            thread.start()

            async def attack() -> None:
                writers = await asyncio.gather(*(prelogin_literal(port, 26 * MiB) for _ in range(connections)))
                for w in writers:
                    w.close()

            asyncio.run(attack())
            done.set()
            thread.join()
            return idle, peak[0], tree_rss(proc.pid)
        finally:
            stop(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", help="a server/ folder to import correo_server from (PYTHONPATH), for a before/after")
    ap.add_argument("--connections", type=int, default=14)
    ap.add_argument("--mib", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--imap-connections", type=int, default=11)
    ap.add_argument("--no-dovecot", action="store_true", help="skip Dovecot's run")
    args = ap.parse_args()
    env = {"PYTHONPATH": args.server} if args.server else {}
    with tempfile.TemporaryDirectory(prefix="correo-hostile-") as tmp:
        relay = ServiceProcess("relay", Path(tmp) / "relay", env=env,
                               overrides={"max_connections_per_client": args.connections * args.rounds + 5})
        try:
            port = relay.ports["smtp"]
            asyncio.run(open_data_round(port, 2, MiB))
            idle = relay.rss()
            rows = []
            for n in range(args.rounds):
                with Sampler(relay.proc.pid) as s:
                    asyncio.run(open_data_round(port, args.connections, args.mib * MiB))
                    time.sleep(3)
                rows.append((n + 1, s.peak, relay.rss(), open_connections(relay)))
        finally:
            relay.stop()
        print(f"relay, {args.connections} open DATA transfers x {args.mib} MiB on port 25, aborted, {args.rounds} rounds")
        print(f"  idle RSS {idle / MiB:7.1f} MiB")
        for n, peak, after, still in rows:
            print(f"  round {n}: peak {peak / MiB:7.1f} MiB, 3 s after close {after / MiB:7.1f} MiB, "
                  f"connections still held {still:.0f}")
        store = ServiceProcess("mailstore", Path(tmp) / "mailstore", env=env, overrides={"tls": False})
        try:
            port = store.ports["imap"]
            idle = store.rss()

            async def attack() -> None:
                writers = await asyncio.gather(*(prelogin_literal(port, 26 * MiB)
                                                 for _ in range(args.imap_connections)))
                for w in writers:
                    w.close()

            with Sampler(store.proc.pid) as s:
                asyncio.run(attack())
            after = store.rss()
        finally:
            store.stop()
        print(f"mailstore, {args.imap_connections} x 'a LOGIN {{27262976}}' before login")
        print(f"  idle RSS {idle / MiB:7.1f} MiB, peak {s.peak / MiB:7.1f} MiB, after {after / MiB:7.1f} MiB")
    if not args.no_dovecot:
        dovecot = dovecot_under_attack(args.imap_connections)
        if dovecot is None:
            print("dovecot: not installed (apt-get install dovecot-imapd), no comparison")
        else:
            d_idle, d_peak, d_after = dovecot
            print("dovecot (all its processes), the same IMAP attack")
            print(f"  idle RSS {d_idle / MiB:7.1f} MiB, peak {d_peak / MiB:7.1f} MiB, after {d_after / MiB:7.1f} MiB; "
                  f"correo's growth {max(0, s.peak - idle) / MiB:.1f} MiB vs Dovecot's {max(0, d_peak - d_idle) / MiB:.1f} MiB")


if __name__ == "__main__":
    main()
