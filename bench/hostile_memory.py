"""Resident memory of the relay and the mailstore under issue 10's hostile
clients: open DATA transfers on port 25 (no login) held and aborted over
repeated rounds, and 26 MiB pre-login IMAP literals.  Prints the idle, peak
and after-round ``VmRSS`` of each service (each in a process of its own).

    .venv/bin/python bench/hostile_memory.py                       # this checkout
    .venv/bin/python bench/hostile_memory.py --server /work/main/server   # another one, for a before/after

Defaults are issue 10's attack: 14 connections x 24 MiB, 4 rounds; IMAP 11 x
26 MiB.  ``--connections``, ``--mib``, ``--rounds`` scale it."""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "hardening"))

import time  # noqa: E402

from hostile import MiB, Sampler, ServiceProcess, open_connections, open_data_round, prelogin_literal  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", help="a server/ folder to import correo_server from (PYTHONPATH), for a before/after")
    ap.add_argument("--connections", type=int, default=14)
    ap.add_argument("--mib", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--imap-connections", type=int, default=11)
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


if __name__ == "__main__":
    main()
