"""Once through everything: the operator (the chart's pod, its ServiceAccount)
applies the workloads; the controller-manager makes their Pods; the node runs
each Pod as the API server holds it and, its readiness probe answering, the
test marks it Ready in place of a kubelet.  Then the operator's status timer
reads the real ``/status`` of the running queue and mailstore: the MailDomain
becomes Ready for ``kubectl wait``, a delivered message shows in the Mailbox's
usage and a deferred one on the MailDomain, as the real API server stores it."""
from __future__ import annotations

import datetime
import json

import pytest
from envkit import apply, condition, get, wait_for
from node import materialise, service_names
from podkit import DOMAIN_NAME, REMOTE_A, REMOTE_MX, inbox_subjects, resources, send


def live(cp, path: str) -> dict | None:
    code, doc = cp.request("GET", path)
    return doc if code == 200 else None


def mark_ready(cp, pod: dict) -> None:
    """What kubelet reports once the containers run and the readiness probe passes."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    meta = pod["metadata"]
    status = {
        "phase": "Running", "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
        "startTime": now,
        "conditions": [{"type": t, "status": "True", "lastTransitionTime": now}
                       for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
        "containerStatuses": [{"name": c["name"], "image": c["image"], "imageID": "", "ready": True,
                               "started": True, "restartCount": 0, "state": {"running": {"startedAt": now}}}
                              for c in pod["spec"]["containers"]],
    }
    code, doc = cp.request("PATCH", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                           {"status": status}, content_type="application/merge-patch+json")
    assert code == 200, doc


@pytest.fixture
def running(control_plane, node):
    """Pods started on the node by the test, stopped afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        node.stop_pod(name)


def test_the_operator_runs_the_stack_and_writes_what_the_services_report(
        kubectl, namespace, controller_manager, operator, node, running, tmp_path):
    cp = controller_manager
    apply(kubectl, namespace, resources(namespace))
    operator.start()

    def pods() -> list[dict]:
        return kubectl.json("get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={DOMAIN_NAME}")["items"]
    wait_for(lambda: len(pods()) == 4, timeout=120, what=lambda: f"4 pods from the controllers: {pods()}")
    services = kubectl.json("get", "services", "-A")["items"]
    node.set_dns({**service_names(services), **REMOTE_A}, REMOTE_MX)

    def lookup(kind: str, name: str) -> dict | None:
        plural = {"Secret": "secrets", "ConfigMap": "configmaps"}[kind]
        return live(cp, f"/api/v1/namespaces/{namespace}/{plural}/{name}")

    by_component = {}
    for pod in pods():
        name = pod["metadata"]["name"]
        mounts = materialise(pod, tmp_path / name, lookup, claims=tmp_path / "claims",
                             fs_group=(pod["spec"].get("securityContext") or {}).get("fsGroup"))
        node.run_pod(name, pod, mounts)
        running.append(name)
        by_component[pod["metadata"]["labels"]["app.kubernetes.io/component"]] = pod
    assert sorted(by_component) == ["autoconfig", "mailstore", "queue", "relay"]
    for component, pod in by_component.items():
        name = pod["metadata"]["name"]
        wait_for(lambda: node.probe(name)[0] == 200, timeout=90,
                 what=lambda: f"{component} ready\n{node.pod_log(name)[-3000:]}")
        mark_ready(cp, pod)

    # The controllers count the Ready pods; the operator reads them and the services' /status.
    done = kubectl.run("wait", "--for=condition=Ready", f"maildomain/{DOMAIN_NAME}", "-n", namespace,
                       "--timeout=120s", check=False)
    assert done.returncode == 0, f"{done.stderr}\n{get(kubectl, namespace, f'maildomain/{DOMAIN_NAME}')}\n" \
                                 f"{operator.log()[-3000:]}"
    kubectl.run("wait", "--for=condition=Ready", "mailbox/alice", "mailbox/bob", "-n", namespace, "--timeout=60s")

    # Mail in: relay → queue → mailstore, and bob's usage on his Mailbox.
    send(node, 2525, "someone@elsewhere.test", "bob@example.com", "Hello bob")
    wait_for(lambda: "Hello bob" in inbox_subjects(node, 2143, "bob@example.com", "canwefixit"), timeout=60)
    wait_for(lambda: ((get(kubectl, namespace, "mailbox/bob") or {}).get("status", {}).get("usage") or {})
             .get("messages") == 1, timeout=60, what="bob's usage: 1 message")

    # Mail out to an MX nobody answers: deferred, on the MailDomain and on alice's Mailbox.
    send(node, 2587, "alice@example.com", "carol@remote.test", "Hello carol", login=("alice@example.com", "wonderland"))
    domain = wait_for(lambda: (d := get(kubectl, namespace, f"maildomain/{DOMAIN_NAME}"))
                      and (d["status"].get("queue") or {}).get("deferred") == 1 and d,
                      timeout=60, what="the deferred message on the MailDomain's status")
    assert domain["status"]["queue"]["lastErrors"][0]["destination"] == "mx.remote.test"
    table = kubectl.run("get", "md", DOMAIN_NAME, "-n", namespace).stdout.splitlines()
    assert table[1].split()[1:5] == ["example.com", "True", "1", "0"]  # DOMAIN READY DEFERRED BOUNCED
    wait_for(lambda: ((get(kubectl, namespace, "mailbox/alice") or {}).get("status", {}).get("delivery") or {})
             .get("deferred") == 1, timeout=60, what="alice's deferred message on her Mailbox")

    # An edit while the operator is down: kubectl wait ignores the stale Ready (its
    # observedGeneration is the old one) until the operator has looked at the new spec.
    operator.stop()
    kubectl.run("patch", "maildomain", DOMAIN_NAME, "-n", namespace, "--type=merge",
                "-p", json.dumps({"spec": {"relay": {"serviceType": "NodePort"}}}))
    stale = kubectl.run("wait", "--for=condition=Ready", f"maildomain/{DOMAIN_NAME}", "-n", namespace,
                        "--timeout=3s", check=False)
    assert stale.returncode != 0 and "timed out" in stale.stderr
    operator.start()
    kubectl.run("wait", "--for=condition=Ready", f"maildomain/{DOMAIN_NAME}", "-n", namespace, "--timeout=120s")
    domain = get(kubectl, namespace, f"maildomain/{DOMAIN_NAME}")
    assert condition(domain)["observedGeneration"] == domain["metadata"]["generation"] == 2
    assert kubectl.json("get", f"service/{DOMAIN_NAME}-relay", "-n", namespace)["spec"]["type"] == "NodePort"
