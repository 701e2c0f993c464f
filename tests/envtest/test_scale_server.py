"""Scale-out on the real API server: a MailDomain with mailstore shards and
Mailboxes pinned to a shard are accepted; what ``correo render`` makes for
three shards and two queue replicas (the mailstore StatefulSet with three
replicas, its headless Service, the proxy Deployment and the public Service,
the queue StatefulSet with two) passes
``--dry-run=server --validate=strict``; impossible counts are refused at
their field."""
from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from correo_operator import placement

ROOT = Path(__file__).resolve().parents[2]

DOMAIN = {"apiVersion": "correo.dev/v1alpha1", "kind": "MailDomain", "metadata": {"name": "acme"},
          "spec": {"domain": "acme.test", "tls": {"secretName": "acme-tls"}, "mailstore": {"shards": 3}}}
SECRET = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pw"}, "stringData": {"password": "hunter2"}}


def mailbox(name: str, **spec) -> dict:
    return {"apiVersion": "correo.dev/v1alpha1", "kind": "Mailbox", "metadata": {"name": name},
            "spec": {"address": f"{name}@acme.test", "passwordSecretRef": {"name": "pw"}, **spec}}


def test_a_sharded_domain_and_its_rendered_objects_pass_strict_server_validation(kubectl, namespace, tmp_path):
    domain = {**DOMAIN, "spec": {**DOMAIN["spec"], "queue": {"replicas": 2}}}  # and two queue replicas
    docs = [domain, SECRET, mailbox("ana", shard=2), *(mailbox(f"user{i}") for i in range(6))]
    (tmp_path / "acme.yaml").write_text(yaml.safe_dump_all(docs))
    out = kubectl.run("apply", "--server-side", "--dry-run=server", "--validate=strict", "-n", namespace,
                      "-f", "-", input=yaml.safe_dump_all(docs)).stdout
    assert out.count("(server dry run)") == len(docs), out
    done = subprocess.run([sys.executable, "-m", "correo_operator.cli", "render", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, check=True, cwd=ROOT)
    objects = [o for o in yaml.safe_load_all(done.stdout) if o]
    for o in objects:
        o["metadata"]["namespace"] = namespace
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert {("StatefulSet", "acme-mailstore"), ("Service", "acme-mailstore-internal"),
            ("Deployment", "acme-proxy"), ("Service", "acme-mailstore")} <= names
    sts = next(o for o in objects if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "acme-mailstore")
    assert sts["spec"]["replicas"] == 3
    queue = next(o for o in objects if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "acme-queue")
    assert queue["spec"]["replicas"] == 2 and queue["spec"]["volumeClaimTemplates"]  # a spool volume each
    text = yaml.safe_dump_all(objects)
    out = kubectl.run("apply", "--server-side", "--dry-run=server", "--validate=strict", "-f", "-",
                      input=text).stdout
    assert out.count("(server dry run)") == len(objects), out


@pytest.mark.parametrize("obj, field, says", [
    ({**DOMAIN, "spec": {"domain": "acme.test", "mailstore": {"shards": 0}}}, "spec.mailstore.shards",
     "greater than or equal to 1"),
    ({**DOMAIN, "spec": {"domain": "acme.test", "queue": {"replicas": 33}}}, "spec.queue.replicas",
     "less than or equal to 32"),
    (mailbox("ana", shard=-1), "spec.shard", "greater than or equal to 0"),
])
def test_impossible_counts_are_refused_at_their_field(kubectl, namespace, obj, field, says):
    done = kubectl.run("create", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", "-",
                       input=yaml.safe_dump(obj), check=False)
    assert done.returncode != 0
    assert any(field in line and says in line for line in done.stderr.splitlines()), done.stderr


def test_the_operator_runs_three_shards_and_scaling_up_moves_no_mailbox(kubectl, namespace, operator):
    from envkit import apply, get, wait_for
    from podkit import DOMAIN_NAME, resources

    objects = resources(namespace)
    objects[0]["spec"]["mailstore"] = {"shards": 3}
    apply(kubectl, namespace, objects)
    operator.start()

    def live(kind: str, name: str) -> dict | None:
        done = kubectl.run("get", f"{kind}/{name}", "-n", namespace, "-o", "json", check=False)
        return json.loads(done.stdout) if done.returncode == 0 else None

    wait_for(lambda: live("deployment", f"{DOMAIN_NAME}-proxy") and live("secret", f"{DOMAIN_NAME}-proxy"),
             timeout=90, what=f"the proxy and its credential\n{operator.log()[-3000:]}")
    assert live("statefulset", f"{DOMAIN_NAME}-mailstore")["spec"]["replicas"] == 3
    secret = base64.b64decode(live("secret", f"{DOMAIN_NAME}-proxy")["data"]["proxy.secret"]).decode()
    assert len(secret) == 64

    def recorded() -> dict[str, int]:
        directory = live("secret", f"{DOMAIN_NAME}-directory")
        return placement.shards_in_directory(base64.b64decode(directory["data"]["directory.yaml"]).decode())
    before = recorded()
    assert set(before) == {"alice@example.com", "bob@example.com"}

    kubectl.run("patch", "maildomain", DOMAIN_NAME, "-n", namespace, "--type=merge",
                "-p", '{"spec":{"mailstore":{"shards":5}}}')
    wait_for(lambda: live("statefulset", f"{DOMAIN_NAME}-mailstore")["spec"]["replicas"] == 5, timeout=90,
             what=f"the mailstore scaled to 5 shards\n{operator.log()[-3000:]}")
    assert recorded() == before
    assert base64.b64decode(live("secret", f"{DOMAIN_NAME}-proxy")["data"]["proxy.secret"]).decode() == secret
    assert get(kubectl, namespace, f"maildomain/{DOMAIN_NAME}")["spec"]["mailstore"]["shards"] == 5

    # A pin naming no shard: the Mailbox says so, where kubectl describe shows it.
    kubectl.run("patch", "mailbox", "alice", "-n", namespace, "--type=merge", "-p", '{"spec":{"shard":9}}')

    def pin_refused() -> dict | None:
        conditions = (get(kubectl, namespace, "mailbox/alice").get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "Placed" and c["reason"] == "PinOutOfRange"), None)
    cond = wait_for(pin_refused, timeout=90,
                    what=lambda: f"Placed=False PinOutOfRange on alice\n{operator.log()[-3000:]}")
    assert cond["status"] == "False" and "spec.shard 9 does not exist (the MailDomain has 5 shard(s)" in cond["message"]
    assert recorded() == before  # alice stays where her mail is
    described = kubectl.run("describe", "mailbox/alice", "-n", namespace).stdout
    assert "PinOutOfRange" in described and "spec.shard 9 does not exist" in described

    # A pin on another shard starts a move: the directory keeps alice where her
    # mail is until the copy is verified; no shard pod answers here, so the move
    # waits, and the Mailbox says so (Moving, reason ShardUnavailable).
    was = before["alice@example.com"]
    target = (was + 1) % 5
    kubectl.run("patch", "mailbox", "alice", "-n", namespace, "--type=merge", "-p",
                json.dumps({"spec": {"shard": target}}))

    def move_waits() -> dict | None:
        conditions = (get(kubectl, namespace, "mailbox/alice").get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "Moving" and c["status"] == "True"
                     and c["reason"] == "ShardUnavailable"), None)
    cond = wait_for(move_waits, timeout=90, what=lambda: f"Moving=True on alice\n{operator.log()[-3000:]}")
    assert f"moving from shard {was} to shard {target}" in cond["message"]
    assert recorded() == before
    status = get(kubectl, namespace, "mailbox/alice")["status"]
    assert status["shard"] == was
    assert next(c for c in status["conditions"] if c["type"] == "Placed")["reason"] == "Moving"
    assert "ShardUnavailable" in kubectl.run("describe", "mailbox/alice", "-n", namespace).stdout
