"""Operator scale: 1,000 Mailboxes on one MailDomain, against the API double.

Prints how long until every Mailbox is reconciled (in the directory Secret and
its status Ready), how many API writes that took per Mailbox, and how many
writes a resync makes when nothing changed (it should be zero); in
``reconciler`` mode also the CPU time of a no-op resync pass (process CPU, so
it holds on a loaded machine where the wall-clock figures do not).

Modes:

* ``kopf`` (default): the real operator (``kopfapp.run``: kopf's watch streams,
  index, handlers, timer) in its own thread, talking HTTP to the API double.
  The MailDomain exists first; then the Mailboxes and their Secrets arrive
  all at once, as a GitOps sync would create them.
* ``reconciler``: no kopf and no HTTP: 1,000 concurrent triggers of the
  Reconciler (one per Mailbox event) over the in-memory double.

The data plane is simulated: the mailstore reports a mailbox as loaded once the
directory Secret lists it, and the relay, queue and mailstore workloads are
made ready as kubelet would.

    python bench/operator_scale.py                      # kopf, 1,000 Mailboxes
    python bench/operator_scale.py --mode reconciler
    python bench/operator_scale.py --plaintext          # plaintext passwords (argon2 each)
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import concurrent.futures
import logging
import sys
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "operator"))

from apidouble import DoubleKube, Server, Store  # noqa: E402
from opkit import NS, FakeDataPlane, make_ready, mailbox, maildomain  # noqa: E402

from correo_operator import kopfapp, loading, statuspoll  # noqa: E402
from correo_operator.kube import Connection  # noqa: E402
from correo_operator.reconcile import Reconciler  # noqa: E402
from correo_server import passwords  # noqa: E402

DOMAIN = "example-com"
NOOP_PASSES = 10
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class DirectoryDataPlane(FakeDataPlane):
    """The mailstore knows a mailbox once the directory Secret lists it."""

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store
        self.loaded: frozenset[str] = frozenset()
        self._seen = ""

    def refresh(self) -> None:
        secret = self.store.objects.get(("", "secrets", NS, f"{DOMAIN}-directory"))
        if secret is None or secret["metadata"]["resourceVersion"] == self._seen:
            return
        self._seen = secret["metadata"]["resourceVersion"]
        doc = yaml.load(base64.b64decode(secret["data"]["directory.yaml"]), Loader=_LOADER)
        self.loaded = frozenset(m["address"] for m in doc["mailboxes"])

    async def __call__(self, url: str) -> dict | None:
        doc = await super().__call__(url)
        if doc is not None and doc.get("service") == "mailstore":
            doc["mailboxes"] = {a: {"messages": 0, "bytes": 0, "quotaBytes": 1 << 30, "lastDelivery": None}
                                for a in self.loaded}
        return doc


def mailbox_objects(n: int, plaintext: bool) -> list[dict]:
    shared = passwords.hash_password("benchmark-password", b"benchmark-salt!!")
    out = []
    for i in range(n):
        name = f"user{i:04d}"
        out.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{name}-password", "namespace": NS},
                    "type": "Opaque", "stringData": {"password": f"pw-{i}-secret" if plaintext else shared}})
        out.append(mailbox(name, f"{name}@example.com", quota="1Gi"))
    return out


def ready_count(store: Store) -> int:
    n = 0
    for key, mb in list(store.objects.items()):
        if key[1] != "mailboxes":
            continue
        for c in (mb.get("status") or {}).get("conditions") or []:
            if c["type"] == "Ready" and c["status"] == "True":
                n += 1
    return n


def summarize(store: Store, mark: int, n: int) -> dict:
    writes = store.writes(since=mark)
    by = collections.Counter(f"{w.verb} {w.resource}" for w in writes)
    reads = [r for r in store.requests[mark:] if r.verb in ("get", "list")]
    return {"writes": len(writes), "by": by, "reads": len(reads),
            "per_mailbox": len(writes) / n,
            "per_mailbox_without_status": len([w for w in writes if w.resource != "mailboxes/status"]) / n}


async def until(pred, timeout: float, tick=None) -> float:
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start > timeout:
            raise TimeoutError("not reconciled in time")
        if tick:
            tick()
        await asyncio.sleep(0.25)
    return time.monotonic() - start


async def run_kopf(n: int, plaintext: bool, interval: float, timeout: float) -> None:
    store = Store(crds=loading.crds())
    dataplane = DirectoryDataPlane(store)
    store.put(maildomain(DOMAIN))
    async with Server(store) as server:
        config = kopfapp.OperatorConfig(status_interval=interval, metrics_port=None,
                                        connection=Connection(server=server.url), status_fetch=dataplane)
        stop, ready, holder = concurrent.futures.Future(), threading.Event(), {}
        thread = threading.Thread(target=lambda: asyncio.run(kopfapp.run(config, stop_flag=stop, ready_flag=ready,
                                                                         holder=holder)), daemon=True)
        thread.start()
        await until(lambda: store.one("Deployment", NS, f"{DOMAIN}-relay") is not None, 30)
        make_ready(store)
        await asyncio.sleep(1.0)
        mark = len(store.requests)
        passes_before = holder["runtime"].reconciler.passes

        started = time.monotonic()
        for obj in mailbox_objects(n, plaintext):
            store.put(obj)
        created = time.monotonic() - started

        def tick():
            dataplane.refresh()
        in_directory = await until(lambda: len(dataplane.loaded) >= n, timeout, tick)
        all_ready = await until(lambda: ready_count(store) >= n, timeout, tick)
        figures = summarize(store, mark, n)
        passes = holder["runtime"].reconciler.passes - passes_before

        # No-op resyncs: let the timer run three passes with nothing new.
        reconciler = holder["runtime"].reconciler
        settle = reconciler.passes
        await until(lambda: reconciler.passes >= settle + 1, timeout)
        await until(lambda: not reconciler._state, timeout)  # that pass (in kopf's thread) is over
        quiet = len(store.requests)
        passes_quiet = reconciler.passes
        await until(lambda: reconciler.passes >= passes_quiet + 3, timeout)
        noop = summarize(store, quiet, n)
        noop_passes = reconciler.passes - passes_quiet

        stop.set_result(None)
        await asyncio.to_thread(thread.join, 30)
    report("kopf operator over HTTP", n, plaintext, created, created + in_directory,
           created + in_directory + all_ready, passes, figures, noop, noop_passes)


async def run_reconciler(n: int, plaintext: bool, timeout: float) -> None:
    store = Store(crds=loading.crds())
    dataplane = DirectoryDataPlane(store)
    kube = DoubleKube(store)
    store.put(maildomain(DOMAIN))
    r = Reconciler(kube, after=statuspoll.StatusWriter(dataplane), debounce=0.05)
    await r.run(NS, DOMAIN)
    make_ready(store)
    mark = len(store.requests)
    passes_before = r.passes
    for obj in mailbox_objects(n, plaintext):
        store.put(obj)
    started = time.monotonic()
    await asyncio.gather(*(r.run(NS, DOMAIN, trigger="mailbox") for _ in range(n)))
    dataplane.refresh()
    in_directory = time.monotonic() - started
    while ready_count(store) < n:
        await r.run(NS, DOMAIN, trigger="resync")
        dataplane.refresh()
    all_ready = time.monotonic() - started
    figures = summarize(store, mark, n)
    passes = r.passes - passes_before
    quiet = len(store.requests)
    cpu = time.process_time()
    for _ in range(NOOP_PASSES):
        await r.run(NS, DOMAIN, trigger="resync")
    noop = summarize(store, quiet, n)
    noop["cpu_per_pass"] = (time.process_time() - cpu) / NOOP_PASSES
    report("Reconciler in memory", n, plaintext, 0.0, in_directory, all_ready, passes, figures, noop, NOOP_PASSES)


def report(title, n, plaintext, created, in_directory, all_ready, passes, figures, noop, noop_passes) -> None:
    print(f"operator scale: {title}, {n} Mailboxes on one MailDomain"
          f" ({'plaintext passwords, hashed by the operator' if plaintext else 'passwords stored as hashes'})")
    if created:
        print(f"  objects created by the test in        {created:8.2f} s")
    print(f"  all Mailboxes in the directory after  {in_directory:8.2f} s")
    print(f"  all Mailboxes Ready after             {all_ready:8.2f} s")
    print(f"  reconcile passes                      {passes:8d}")
    print(f"  API writes                            {figures['writes']:8d}"
          f"  ({figures['per_mailbox']:.3f} per Mailbox;"
          f" {figures['per_mailbox_without_status']:.3f} per Mailbox besides its own status)")
    for what, count in sorted(figures["by"].items()):
        print(f"      {count:6d}  {what}")
    print(f"  API reads                             {figures['reads']:8d}")
    print(f"  no-op resyncs: {noop_passes} passes, {noop['writes']} API writes, {noop['reads']} reads")
    if "cpu_per_pass" in noop:  # the operator's own work and the in-memory double's, not the machine's load
        print(f"  CPU per no-op resync pass             {noop['cpu_per_pass'] * 1000:8.1f} ms"
              f"  ({noop['cpu_per_pass'] * 1e6 / n:.1f} µs per Mailbox)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mailboxes", type=int, default=1000)
    p.add_argument("--mode", choices=["kopf", "reconciler"], default="kopf")
    p.add_argument("--plaintext", action="store_true", help="plaintext passwords in the Secrets")
    p.add_argument("--interval", type=float, default=2.0, help="the operator's resync interval (kopf mode)")
    p.add_argument("--timeout", type=float, default=600.0)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import structlog
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.mode == "kopf":
        asyncio.run(run_kopf(args.mailboxes, args.plaintext, args.interval, args.timeout))
    else:
        asyncio.run(run_reconciler(args.mailboxes, args.plaintext, args.timeout))


if __name__ == "__main__":
    main()
