"""Two queue replicas on ``correo up`` (with three mailstore shards): the
relay hands mail to both (each replica's own spool saw messages and
delivered them to every shard), one killed with SIGKILL costs no client a
``451`` (the relay hands mail to the other) and comes back with its mail,
``correo queue list`` and ``correo status`` put the replicas together, and
starting again with one replica drains the other's spool into it, the
messages keeping their arrival and history, the figures theirs."""
from __future__ import annotations

import json
import os
import signal
import threading
import urllib.request

import pytest
import yaml
from dnslib.server import DNSLogger, DNSServer

from . import scalekit
from .test_queue_replicas_drain import Zone

pytestmark = pytest.mark.e2e

SHARDS = 3
PLACED = scalekit.mailboxes_on_every_shard(SHARDS, 1)
EVERYONE = [a for shard in sorted(PLACED) for a in PLACED[shard]]


def write_yaml(folder, replicas: int, shards: int = SHARDS) -> None:
    scalekit.write_yaml(folder, shards, EVERYONE)
    path = folder / "scale.yaml"
    docs = list(yaml.safe_load_all(path.read_text()))
    docs[0]["spec"]["queue"] = {"replicas": replicas}
    path.write_text(yaml.safe_dump_all(docs))


@pytest.fixture(scope="module")
def dns():
    """Loopback DNS that cannot answer for remote.test (SERVFAIL): its mail stays deferred in the queue."""
    zone = Zone()
    zone.servfail.add("remote.test")
    server = DNSServer(zone, port=0, address="127.0.0.1", tcp=False,
                       logger=DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False))
    server.start_thread()
    yield f"127.0.0.1:{server.server.server_address[1]}"
    server.stop()
    server.server.server_close()


def status_of(url: str) -> dict:
    with urllib.request.urlopen(url + "/status", timeout=10) as resp:
        return json.loads(resp.read())


def queue_list(stack) -> dict:
    return json.loads(stack.correo("queue", "list", "-o", "json").stdout)


def test_two_queue_replicas_share_the_mail_and_a_scale_down_drains_one(tmp_path, dns):
    write_yaml(tmp_path / "yaml", replicas=2)
    extra = ("--dns", dns)
    stack = scalekit.start(tmp_path / "data", tmp_path / "yaml", services=SHARDS + 5, extra=extra)
    try:
        ep = stack.state["endpoints"]
        assert stack.state["queues"] == 2 and {"queue-0", "queue-1"} <= set(stack.state["services"])
        sender = EVERYONE[0]
        for n in range(12):
            stack.send(sender, [EVERYONE[n % len(EVERYONE)]], f"local {n}")
        for n in range(6):
            stack.send(sender, [f"someone{n}@remote.test"], f"remote {n}")

        # Both spools took mail and delivered it, to every shard.
        def delivered():
            figures = [status_of(ep[f"queue-{i}"]["http"])["totals"]["delivered"] for i in (0, 1)]
            return figures if sum(figures) == 12 else None
        per_replica = stack.wait_for(delivered, timeout=120, what="12 local deliveries")
        assert all(n > 0 for n in per_replica), per_replica
        for shard in range(SHARDS):
            box = status_of(ep[f"mailstore-{shard}"]["http"])["mailboxes"]
            assert any(v.get("messages", 0) > 0 for v in box.values()), (shard, box)

        # The deferred remote mail is listed from both replicas, each message once.
        doc = stack.wait_for(lambda: (d := queue_list(stack))["count"] == 6 and d, what="6 deferred messages")
        assert {m["replica"] for m in doc["messages"]} == {0, 1}
        assert sorted(m["recipients"][0]["address"] for m in doc["messages"]) == \
            sorted(f"someone{n}@remote.test" for n in range(6))
        table = stack.correo("queue", "list").stdout
        assert "(replica 0)" in table and "(replica 1)" in table and "on 2 queue replicas" in table
        one = doc["messages"][-1]
        shown = stack.correo("queue", "show", one["id"]).stdout
        assert f"(replica {one['replica']})" in shown

        # kill -9 one replica: the relay hands everything to the other, no client hears 451;
        # the killed one comes back (restarted) with its deferred mail.
        pid = stack.state["services"]["queue-1"]
        os.kill(pid, signal.SIGKILL)
        for n in range(6):
            stack.send(sender, [EVERYONE[n % len(EVERYONE)]], f"while one is down {n}")
        stack.wait_for(lambda: sum(status_of(ep[f"queue-{i}"]["http"])["totals"]["delivered"] for i in (0, 1)) == 18
                       and stack.state["services"].get("queue-1") not in (None, pid), timeout=120,
                       what="18 deliveries and queue-1 restarted")
        assert "queue_replica_skipped" in stack.log() or "queue_replica_unreachable" in stack.log()
        stack.wait_for(lambda: queue_list(stack)["count"] == 6, what="the killed replica's deferred mail back")

        status = stack.status()["MailDomain/scale"]["status"]
        assert [r["replica"] for r in status["queueReplicas"]] == [0, 1]
        assert all(r["ready"] for r in status["queueReplicas"])
        assert sum(r["messages"] for r in status["queueReplicas"]) == 6
        assert status["queue"]["delivered"] == 18
        arrival = {m["id"]: m["arrival"] for m in doc["messages"]}
    finally:
        stack.stop()

    # One replica from now on: replica 1's spool is drained into replica 0.
    write_yaml(tmp_path / "yaml", replicas=1)
    stack = scalekit.start(tmp_path / "data", tmp_path / "yaml", services=SHARDS + 4, extra=extra)
    try:
        stack.wait_for(lambda: not (tmp_path / "data" / "queue-1").exists(), timeout=120, what="replica 1 drained")
        doc = queue_list(stack)
        assert doc["count"] == 6 and {m["id"]: m["arrival"] for m in doc["messages"]} == arrival
        assert all(m["recipients"][0]["attempts"] >= 1 for m in doc["messages"])
        assert "queue_replica_drained" in stack.log()
        # what replica 1 counted came along: the domain's figures did not drop
        assert stack.status()["MailDomain/scale"]["status"]["queue"]["delivered"] == 18
    finally:
        stack.stop()


def test_correo_up_changes_the_number_of_queue_replicas_while_it_runs_and_under_load(tmp_path, dns):
    """Edit replicas in the YAML while ``correo up`` runs: 1 → 2 starts a
    second queue, 2 → 1 stops it and drains its spool into the first while
    clients keep sending; every message accepted is delivered or queued, once."""
    write_yaml(tmp_path / "yaml", replicas=1, shards=1)
    stack = scalekit.start(tmp_path / "data", tmp_path / "yaml", services=4, extra=("--dns", dns))
    try:
        sender, local = EVERYONE[0], EVERYONE[1]
        for n in range(4):
            stack.send(sender, [f"early{n}@remote.test"], f"early remote {n}")
            stack.send(sender, [local], f"early local {n}")

        write_yaml(tmp_path / "yaml", replicas=2, shards=1)
        stack.wait_for(lambda: stack.state.get("queues") == 2 and {"queue-0", "queue-1"} <= set(stack.state["services"])
                       and "queue" not in stack.state["services"], timeout=120, what="two queue replicas running")
        ep = stack.state["endpoints"]
        for n in range(8):
            stack.send(sender, [local], f"two local {n}")
        for n in range(6):
            stack.send(sender, [f"two{n}@remote.test"], f"two remote {n}")
        stack.wait_for(lambda: status_of(ep["queue-1"]["http"])["totals"]["delivered"] > 0, what="replica 1 delivering")
        doc = stack.wait_for(lambda: (d := queue_list(stack))["count"] == 10 and d, what="10 deferred messages")
        assert {m["replica"] for m in doc["messages"]} == {0, 1}
        arrival = {m["id"]: m["arrival"] for m in doc["messages"]}

        # Down to one while a client keeps sending: no message refused, none lost.
        sent, errors = [], []

        def load() -> None:
            for n in range(10):
                try:
                    stack.send(sender, [local], f"during {n}")
                    sent.append(n)
                except Exception as exc:  # noqa: BLE001 - reported below
                    errors.append(repr(exc))
        client = threading.Thread(target=load)
        client.start()
        write_yaml(tmp_path / "yaml", replicas=1, shards=1)
        client.join(180)
        assert not errors and len(sent) == 10
        stack.wait_for(lambda: stack.state.get("queues") == 1 and "queue" in stack.state["services"]
                       and not (tmp_path / "data" / "queue-1").exists(), timeout=120, what="replica 1 drained")
        doc = queue_list(stack)
        assert doc["count"] == 10 and {m["id"]: m["arrival"] for m in doc["messages"]} == arrival
        assert "replica" not in doc["messages"][0]  # one queue again
        delivered = stack.wait_for(
            lambda: (n := stack.status()["MailDomain/scale"]["status"]["queue"]["delivered"]) == 22 and n,
            what="22 local deliveries counted")
        assert delivered == 22
    finally:
        stack.stop()
