"""The kopf wiring, run for real: kopf's own machinery (watch streams, indexes,
finalizers, annotations, timers) in a thread, against the API double over HTTP,
with the RBAC the chart grants enforced by the double.  Every handler is
exercised at least once."""
from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import threading
import time
from typing import Any, Callable

import aiohttp
import pytest
import yaml
from apidouble import Server, Store
from opkit import NS, FakeDataPlane, make_ready, mailbox, maildomain, password_secret

from correo_operator import kopfapp, loading
from correo_operator.kube import PERMISSIONS, Connection

DOMAIN = "example-com"


def granted(*, cluster: bool = True) -> set[tuple[str, str, str]]:
    tables = [PERMISSIONS, kopfapp.KOPF_PERMISSIONS] + ([kopfapp.KOPF_CLUSTER_PERMISSIONS] if cluster else [])
    return {(g, r, v) for t in tables for (g, r), verbs in t.items() for v in verbs}


async def until(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or predicate}")


class OperatorThread:
    """``kopfapp.run`` in its own thread and event loop, like ``kopf.testing.KopfRunner``."""

    def __init__(self, config: kopfapp.OperatorConfig) -> None:
        self.config = config
        # A concurrent Future, not a threading.Event: kopf would wait for the latter in an
        # executor thread that outlives the operator.
        self.stop_flag: concurrent.futures.Future = concurrent.futures.Future()
        self.ready_flag = threading.Event()
        self.holder: dict[str, Any] = {}
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="kopf", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(kopfapp.run(self.config, stop_flag=self.stop_flag, ready_flag=self.ready_flag,
                                    holder=self.holder))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    async def start(self) -> None:
        self.thread.start()
        await until(lambda: self.ready_flag.is_set() or self.error, what="kopf ready")
        assert self.error is None, self.error

    async def stop(self) -> None:
        if not self.stop_flag.done():
            self.stop_flag.set_result(None)
        await asyncio.to_thread(self.thread.join, 30)
        assert not self.thread.is_alive(), "kopf did not stop"
        assert self.error is None, self.error

    @property
    def runtime(self) -> kopfapp.Runtime:
        return self.holder["runtime"]


class Cluster:
    def __init__(self, store: Store, server: Server, dataplane: FakeDataPlane) -> None:
        self.store, self.server, self.dataplane = store, server, dataplane
        self.operators: list[OperatorThread] = []

    async def operator(self, *, interval: float = 60.0, namespaces: list[str] | None = None) -> OperatorThread:
        config = kopfapp.OperatorConfig(
            namespaces=namespaces or [], status_interval=interval, metrics_port=0, metrics_host="127.0.0.1",
            connection=Connection(server=self.server.url, token="test-token"),
            status_fetch=self.dataplane, debounce=0.01)
        op = OperatorThread(config)
        self.operators.append(op)
        await op.start()
        return op

    def seed(self, *, mailboxes=("alice", "bob"), **spec) -> None:
        self.store.put(maildomain(DOMAIN, **spec))
        for name in mailboxes:
            self.store.put(password_secret(f"{name}-password", f"pw-{name}"))
            self.store.put(mailbox(name, f"{name}@example.com"))

    def directory(self) -> dict[str, dict]:
        secret = self.store.one("Secret", NS, f"{DOMAIN}-directory")
        if secret is None:
            return {}
        return {m["address"]: m for m in yaml.safe_load(base64.b64decode(secret["data"]["directory.yaml"]))["mailboxes"]}

    def domain(self) -> dict | None:
        return self.store.one("MailDomain", NS, DOMAIN)

    def handled(self) -> bool:
        d = self.domain()
        return bool(d and (d["metadata"].get("annotations") or {}).get("correo.dev/last-handled-configuration")
                    and d.get("status", {}).get("conditions"))


@pytest.fixture
async def cluster(request):
    cluster_wide = not getattr(request, "param", {}).get("namespaced", False)
    store = Store(crds=loading.crds(), rbac=granted(cluster=cluster_wide))
    async with Server(store) as server:
        c = Cluster(store, server, FakeDataPlane())
        try:
            yield c
        finally:
            for op in c.operators:
                if op.thread.is_alive():
                    await op.stop()
    assert store.denied == [], f"the operator needed permissions the chart does not grant: {store.denied}"


class TestMailDomainHandlers:
    async def test_create_renders_everything_with_correo_bookkeeping(self, cluster):
        cluster.seed()
        op = await cluster.operator()
        await until(cluster.handled, what="the MailDomain handled")
        await until(lambda: cluster.store.one("NetworkPolicy", NS, f"{DOMAIN}-mailstore"), what="children")
        d = cluster.domain()
        assert d["metadata"]["finalizers"] == ["correo.dev/finalizer"]
        annotations = d["metadata"]["annotations"]
        assert annotations and all(k.startswith("correo.dev/") for k in annotations), annotations
        assert set(d["status"]) <= {"observedGeneration", "conditions", "mailboxes", "queue", "dnsRecords",
                                    "endpoints", "incoming"}, "nothing kopf-internal in status"
        assert set(cluster.directory()) == {"alice@example.com", "bob@example.com"}
        # kopf added nothing to the Mailboxes: no finalizer, no annotation.
        for name in ("alice", "bob"):
            mb = cluster.store.one("Mailbox", NS, name)
            assert not mb["metadata"].get("finalizers") and not mb["metadata"].get("annotations")
        await op.stop()

    async def test_update_applies_the_new_spec(self, cluster):
        cluster.seed()
        await cluster.operator()
        await until(cluster.handled)
        cluster.store.edit("MailDomain", NS, DOMAIN, {"spec": {"relay": {"replicas": 4}}})
        await until(lambda: cluster.store.one("Deployment", NS, f"{DOMAIN}-relay")["spec"]["replicas"] == 4,
                    what="relay scaled by the update handler")
        await until(lambda: cluster.domain()["status"]["observedGeneration"] == 2, what="observedGeneration 2")

    async def test_resume_repairs_what_changed_while_the_operator_was_down(self, cluster):
        cluster.seed()
        op = await cluster.operator()
        await until(cluster.handled)
        await until(lambda: cluster.store.one("Service", NS, f"{DOMAIN}-relay"))
        await op.stop()
        cluster.store.remove("Service", NS, f"{DOMAIN}-relay")
        await cluster.operator()  # the resume handler runs at startup; the timer is 60 s away
        await until(lambda: cluster.store.one("Service", NS, f"{DOMAIN}-relay"), timeout=10,
                    what="the Service re-created on resume")

    async def test_the_timer_repairs_drift_and_an_idle_resync_writes_nothing(self, cluster):
        cluster.seed()
        cluster.dataplane.load_mailboxes("alice@example.com", "bob@example.com")
        op = await cluster.operator(interval=0.5)
        await until(cluster.handled)
        make_ready(cluster.store)
        await until(lambda: {c["type"]: c["status"] for c in cluster.domain()["status"]["conditions"]}["Ready"]
                    == "True", what="Ready after the workloads are")
        cluster.store.remove("StatefulSet", NS, f"{DOMAIN}-queue")
        await until(lambda: cluster.store.one("StatefulSet", NS, f"{DOMAIN}-queue"), timeout=5,
                    what="the StatefulSet re-created within a resync")
        make_ready(cluster.store)
        await asyncio.sleep(1.5)  # let the status settle
        passes = op.runtime.reconciler.passes
        mark = len(cluster.store.requests)
        await asyncio.sleep(2.0)
        assert op.runtime.reconciler.passes >= passes + 2, "the timer kept resyncing"
        assert cluster.store.writes(since=mark) == [], "an idle resync makes no API writes"

    async def test_delete_runs_the_finalizer_and_the_domain_goes(self, cluster):
        cluster.seed()
        await cluster.operator()
        await until(cluster.handled)
        await until(lambda: cluster.store.one("StatefulSet", NS, f"{DOMAIN}-queue"))
        cluster.store.put({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                           "metadata": {"name": f"mail-{DOMAIN}-mailstore-0", "namespace": NS,
                                        "labels": {"app.kubernetes.io/instance": DOMAIN}},
                           "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
        cluster.store.remove("MailDomain", NS, DOMAIN)
        await until(lambda: cluster.domain() is None, what="the finalizer released")
        retained = [e for e in cluster.store.find("Event", NS) if e["reason"] == "VolumesRetained"]
        assert retained and f"mail-{DOMAIN}-mailstore-0" in retained[0]["message"]
        assert cluster.store.find("StatefulSet", NS) == []
        assert cluster.store.one("PersistentVolumeClaim", NS, f"mail-{DOMAIN}-mailstore-0") is not None
        for name in ("alice", "bob"):  # their MailDomain is gone, and they say so
            mb = cluster.store.one("Mailbox", NS, name)
            ready = {c["type"]: c for c in mb["status"]["conditions"]}["Ready"]
            assert (ready["status"], ready["reason"]) == ("False", "DomainNotFound")


class TestMailboxAndSecretHandlers:
    async def test_a_mailbox_change_reaches_the_directory_without_waiting_for_the_timer(self, cluster):
        cluster.seed()
        await cluster.operator()
        await until(cluster.handled)
        cluster.store.put(password_secret("carol-password", "pw-carol"))
        cluster.store.put(mailbox("carol", "carol@example.com"))
        await until(lambda: "carol@example.com" in cluster.directory(), what="carol in the directory")
        cluster.store.edit("Mailbox", NS, "carol", {"spec": {"suspended": True}})
        await until(lambda: cluster.directory()["carol@example.com"]["suspended"] is True, what="suspended")

    async def test_a_deleted_mailbox_leaves_the_directory(self, cluster):
        cluster.seed()
        await cluster.operator()
        await until(lambda: "bob@example.com" in cluster.directory())
        cluster.store.remove("Mailbox", NS, "bob")
        await until(lambda: set(cluster.directory()) == {"alice@example.com"}, what="bob removed")
        await until(lambda: [e for e in cluster.store.find("Event", NS) if e["reason"] == "MailboxRemoved"])

    async def test_a_changed_password_secret_reaches_the_directory(self, cluster):
        cluster.seed()
        await cluster.operator()
        await until(lambda: "alice@example.com" in cluster.directory())
        before = cluster.directory()["alice@example.com"]["passwordHash"]
        cluster.store.put(password_secret("alice-password", "a-brand-new-one"))
        await until(lambda: cluster.directory()["alice@example.com"]["passwordHash"] != before,
                    what="the new hash in the directory")

    async def test_a_mailbox_of_no_domain_gets_domain_not_found(self, cluster):
        cluster.seed()
        await cluster.operator()
        await until(cluster.handled)
        cluster.store.put(password_secret("zed-password", "z"))
        cluster.store.put(mailbox("zed", "zed@unknown.example"))

        def reason():
            mb = cluster.store.one("Mailbox", NS, "zed")
            conds = {c["type"]: c for c in (mb.get("status") or {}).get("conditions") or []}
            return conds.get("Ready", {}).get("reason")
        await until(lambda: reason() == "DomainNotFound", what="DomainNotFound")


@pytest.mark.parametrize("cluster", [{"namespaced": True}], indirect=True)
async def test_a_namespaced_operator_needs_no_cluster_wide_permission(cluster):
    cluster.seed()
    await cluster.operator(namespaces=[NS])
    await until(cluster.handled, what="handled without CRD or namespace access")
    assert not [r for r in cluster.store.requests if r.group == "apiextensions.k8s.io"]
    assert all(r.namespace == NS for r in cluster.store.requests if r.verb in ("list", "watch"))


async def test_the_metrics_port_counts_reconciles_and_api_writes(cluster):
    cluster.seed()
    op = await cluster.operator()
    await until(cluster.handled)
    port = op.runtime.sideport.port
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as rsp:
            text = await rsp.text()
        async with session.get(f"http://127.0.0.1:{port}/status") as rsp:
            status = json.loads(await rsp.text())
        async with session.get(f"http://127.0.0.1:{port}/readyz") as rsp:
            assert rsp.status == 200
    assert 'correo_operator_reconciles_total{result="ok",trigger=' in text
    assert 'correo_operator_api_writes_total{resource="apps/deployments",verb="patch"}' in text
    assert "correo_operator_reconcile_duration_seconds_count" in text
    assert status["ready"] is True and status["passes"] >= 1


async def test_correo_operator_command_runs_and_stops_on_sigterm(tmp_path):
    """``correo operator`` as the pod runs it: kubeconfig credentials, JSON logs, side port, SIGTERM."""
    import os
    import signal
    import socket
    import sys

    from correo_operator.kube import write_kubeconfig

    store = Store(crds=loading.crds(), rbac=granted())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with Server(store) as server:
        env = {**os.environ, "KUBECONFIG": write_kubeconfig(server.url, str(tmp_path / "kubeconfig")),
               "CORREO_LOG_LEVEL": "info"}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "correo_operator.cli", "operator", f"--metrics-port={port}",
            "--status-interval=60", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            async def ready() -> bool:
                try:
                    async with aiohttp.ClientSession() as session:
                        async with session.get(f"http://127.0.0.1:{port}/readyz") as rsp:
                            return rsp.status == 200
                except aiohttp.ClientError:
                    return False
            deadline = time.monotonic() + 30
            while not await ready():
                assert proc.returncode is None, (await proc.stderr.read()).decode()[-2000:]
                assert time.monotonic() < deadline, "the operator never became ready"
                await asyncio.sleep(0.2)
            await until(lambda: any(r.verb == "watch" and r.resource == "maildomains" for r in store.requests),
                        what="watching MailDomains")
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()[-2000:]
    records = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    assert any(r.get("event") == "operator started" for r in records)
    assert all(r.get("service") == "operator" for r in records)
    assert store.denied == []
