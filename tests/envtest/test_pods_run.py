"""The rendered pods run: the relay, queue and mailstore workloads of ``correo
render``, each started as its pod template says (volumes at their mount
paths, the image's entrypoint with the container's args and env, read-only
root, its user) on a kubelet-less node (``node.py``).  Their Service target
ports listen, their probes answer as declared, and mail flows relay → queue →
mailstore addressed by the Service names in the rendered config (the node's
DNS maps them to its loopback).  No API server is needed here."""
from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from envkit import unavailable, wait_for
from node import Node, NodeUnavailable, materialise, pod_of, service_names
from podkit import REMOTE_A, REMOTE_MX, inbox_subjects, resources, send, status_doc

ROOT = Path(__file__).resolve().parents[2]
NS = "mail"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> list[dict]:
    folder = tmp_path_factory.mktemp("resources")
    user = resources(NS)
    (folder / "all.yaml").write_text(yaml.safe_dump_all(user))
    done = subprocess.run([sys.executable, "-m", "correo_operator.cli", "render", str(folder)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    # The user's Secrets (the TLS pair) sit beside what render makes, as in the namespace.
    return [o for o in yaml.safe_load_all(done.stdout) if o] + [
        o for o in user if o.get("type") == "kubernetes.io/tls"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, rendered):
    try:
        node = Node(tmp_path_factory.mktemp("node")).start()
    except NodeUnavailable as exc:
        unavailable(str(exc))
    workdir = node.dir

    def lookup(kind: str, name: str) -> dict | None:
        hits = [o for o in rendered if o["kind"] == kind and o["metadata"]["name"] == name]
        return hits[0] if hits else None

    try:
        node.set_dns({**service_names([o for o in rendered if o["kind"] == "Service"]), **REMOTE_A}, REMOTE_MX)
        pods = {}
        for workload in (o for o in rendered if o["kind"] in ("Deployment", "StatefulSet")):
            name, pod = pod_of(workload)
            fs_group = (pod["spec"].get("securityContext") or {}).get("fsGroup")
            mounts = materialise(pod, workdir / "pods" / name, lookup, claims=workdir / "claims", fs_group=fs_group)
            node.run_pod(name, pod, mounts)
            pods[workload["metadata"]["labels"]["app.kubernetes.io/component"]] = name
        for component, name in pods.items():
            wait_for(lambda: node.probe(name)[0] == 200, timeout=60,
                     what=f"{component} ready\n{node.pod_log(name)[-3000:]}")
        yield node, pods
    finally:
        node.stop()


def test_four_workloads_each_with_one_container_running_the_image_entrypoint(stack, rendered):
    node, pods = stack
    assert sorted(pods) == ["autoconfig", "mailstore", "queue", "relay"]
    for component, name in pods.items():
        assert node.pod_state(name)["running"], node.pod_log(name)
        container = node.pods[name]["container"]
        assert "command" not in container, "the image's ENTRYPOINT (correo) runs, with the rendered args"
        assert container["args"] == ["serve", component, "--config", "/etc/correo"]
        # services write their log every 50 ms (logs.py): the line may trail the readiness probe
        wait_for(lambda: '"config": "/etc/correo"' in node.pod_log(name), timeout=30,
                 what=lambda: f"{component}'s start line naming its config\n{node.pod_log(name)[-2000:]}")


def test_every_service_target_port_listens(stack, rendered):
    node, _ = stack
    listening = node.listening()
    services = [o for o in rendered if o["kind"] == "Service"]
    assert len(services) == 5
    for svc in services:
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in listening, f"{svc['metadata']['name']}: {port} does not listen"


def test_readiness_and_liveness_probes_answer_as_declared(stack):
    node, pods = stack
    for name in pods.values():
        container = node.pods[name]["container"]
        for kind, body in (("readinessProbe", "ready"), ("livenessProbe", "ok")):
            get = container[kind]["httpGet"]
            assert get["port"] == "http"  # a named port, resolved as kubelet would
            assert node.probe(name, kind) == (200, body + "\n")


def test_pods_run_as_their_security_context_says(stack):
    node, pods = stack
    if os.geteuid() != 0:
        pytest.skip("not root: the node runs pods in a user namespace as the mapped root, not as runAsUser")
    spool = node.dir / "claims" / NS / f"spool-{pods['queue']}"
    wait_for(lambda: any(spool.iterdir()), what="the queue wrote its spool")
    owners = {p.stat().st_uid for p in spool.rglob("*")}
    assert owners == {10001}, "the queue runs as runAsUser 10001 and writes its volume through fsGroup"


def test_mail_flows_from_the_relay_through_the_queue_to_the_mailstore(stack):
    node, _ = stack
    send(node, 2525, "someone@elsewhere.test", "bob@example.com", "Through the pods")
    wait_for(lambda: "Through the pods" in inbox_subjects(node, 2143, "bob@example.com", "canwefixit"),
             timeout=60, what="the message in bob's INBOX over IMAP")


def test_a_message_for_an_unreachable_mx_is_deferred_by_the_queue(stack):
    node, _ = stack
    send(node, 2587, "alice@example.com", "carol@remote.test", "Deferred", login=("alice@example.com", "wonderland"))
    doc = wait_for(lambda: (d := status_doc(node, 8082))["totals"]["deferred"] >= 1 and d, timeout=60,
                   what="a deferred recipient in the queue's /status")
    domain = doc["domains"]["example.com"]
    assert domain["deferred"] >= 1
    assert domain["lastErrors"][0]["destination"] == "mx.remote.test"  # found through the node's DNS
    assert "4.4.1" in domain["lastErrors"][0]["error"]


def test_the_autoconfig_pod_serves_the_mta_sts_policy_and_client_configuration(stack):
    node, _ = stack
    port = node.forward(2080)
    req = urllib.request.Request(f"http://127.0.0.1:{port}/.well-known/mta-sts.txt",
                                 headers={"Host": "mta-sts.example.com"})
    with urllib.request.urlopen(req, timeout=10) as rsp:
        assert rsp.headers["Content-Type"].startswith("text/plain")
        assert rsp.read().decode().startswith("version: STSv1\r\nmode: testing\r\n")
    req = urllib.request.Request(f"http://127.0.0.1:{port}/mail/config-v1.1.xml?emailaddress=bob%40example.com")
    with urllib.request.urlopen(req, timeout=10) as rsp:
        assert b"<hostname>mail.example.com</hostname>" in rsp.read()
