"""Three mailstore shards behind two queue replicas on ``correo up``: mail for mailboxes on every shard
arrives (the queue delivers each recipient to its shard); IMAP (imapclient),
POP3 (poplib) and ManageSieve reach every mailbox through the proxy; a shard
killed with SIGKILL costs only its own mailboxes (logins answer
``NO [UNAVAILABLE]`` / ``-ERR [SYS/TEMP]``, their mail is deferred), and once
it is back the deferred mail is delivered."""
from __future__ import annotations

import base64
import json
import os
import poplib
import signal
import socket
import ssl
import time
import urllib.request

import imapclient
import pytest
import yaml
from imapclient.exceptions import LoginError
from monitoring.test_chart_monitoring import PROXY_SECTION, documented_metrics
from prometheus_client.parser import text_string_to_metric_families

from correo_server.folderlock import FolderInUse
from correo_server.mailstore.datalock import DataDirLock

from . import scalekit
from .scalekit import PASSWORD

pytestmark = pytest.mark.e2e

SHARDS = 3
QUEUES = 2
PLACED = scalekit.mailboxes_on_every_shard(SHARDS, 2)
EVERYONE = [a for shard in sorted(PLACED) for a in PLACED[shard]]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    scalekit.write_yaml(root / "yaml", SHARDS, EVERYONE)
    path = root / "yaml" / "scale.yaml"  # the shape: 3 shards behind 2 queue replicas
    docs = list(yaml.safe_load_all(path.read_text()))
    docs[0]["spec"]["queue"] = {"replicas": QUEUES}
    path.write_text(yaml.safe_dump_all(docs))
    s = scalekit.start(root / "data", root / "yaml", services=SHARDS + QUEUES + 3)  # + proxy, relay, autoconfig
    yield s
    s.stop()


def imap_login(stack, address: str, *, tls: bool = False) -> imapclient.IMAPClient:
    if tls:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        client = imapclient.IMAPClient("127.0.0.1", port=stack.port("imaps"), ssl=True, ssl_context=context,
                                       timeout=30)
    else:
        client = imapclient.IMAPClient("127.0.0.1", port=stack.port("imap"), ssl=False, timeout=30)
    client.login(address, PASSWORD)
    return client


def subjects(stack, address: str) -> list[str]:
    with imap_login(stack, address) as client:
        client.select_folder("INBOX", readonly=True)
        uids = client.search("ALL")
        data = client.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]) if uids else {}
        return sorted(v[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().strip().partition(": ")[2]
                      for v in data.values())


def pop3_count(stack, address: str) -> int:
    pop = poplib.POP3("127.0.0.1", stack.port("pop3"), timeout=30)
    try:
        pop.user(address)
        pop.pass_(PASSWORD)
        return pop.stat()[0]
    finally:
        pop.quit()


def test_every_mailbox_is_placed_on_its_shard_and_the_status_says_which(stack):
    status = stack.status()
    for shard, addresses in PLACED.items():
        for a in addresses:
            assert status[f"Mailbox/{a.partition('@')[0]}"]["status"]["shard"] == shard
    domain = status["MailDomain/scale"]["status"]
    assert [s["mailboxes"] for s in domain["shards"]] == [2, 2, 2]
    assert all(s["ready"] for s in domain["shards"])
    table = stack.correo("status").stdout
    assert "SHARD" in table and "3 mailstore shards, all ready" in table
    row = next(line for line in table.splitlines() if f" {PLACED[2][0]} " in line)
    assert row.split()[-1] == "2"


def test_mail_for_every_shard_arrives_and_is_read_through_the_proxy(stack):
    stack.send(EVERYONE[0], EVERYONE, "hello every shard")
    for address in EVERYONE:
        stack.wait_for(lambda: "hello every shard" in subjects(stack, address), what=f"the message in {address}")
    for shard, addresses in PLACED.items():  # each copy is on its own shard's volume
        folder = stack.data / ("mail" if shard == 0 else f"mail-{shard}")
        held = {p.name for p in folder.iterdir() if "@" in p.name}
        assert held == set(addresses), (shard, held)
    for address in EVERYONE:
        assert pop3_count(stack, address) >= 1
    with imap_login(stack, EVERYONE[-1], tls=True) as client:  # IMAPS: TLS ends at the proxy
        assert client.select_folder("INBOX")[b"EXISTS"] >= 1
    # The proxy logged in to the shards with its credential, over TLS (the stack has a key pair).
    shard_logins = [line for line in stack.log().splitlines() if "mechanism=plain-proxy" in line]
    assert shard_logins and all("tls=True" in line for line in shard_logins)


def test_a_wrong_password_is_refused_at_the_proxy_as_by_the_mailstore(stack):
    client = imapclient.IMAPClient("127.0.0.1", port=stack.port("imap"), ssl=False, timeout=30)
    with pytest.raises(LoginError, match="AUTHENTICATIONFAILED"):
        client.login(EVERYONE[0], "not the password")
    client.shutdown()
    pop = poplib.POP3("127.0.0.1", stack.port("pop3"), timeout=30)
    pop.user(EVERYONE[0])
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        pop.pass_("not the password")
    pop.close()


def test_managesieve_through_the_proxy_reaches_the_user_s_shard(stack):
    address = PLACED[2][0]
    with socket.create_connection(("127.0.0.1", stack.port("managesieve")), timeout=30) as sock:
        f = sock.makefile("rb")

        def until_ok() -> list[bytes]:
            lines = []
            while True:
                line = f.readline()
                assert line, lines
                lines.append(line)
                if line.startswith((b"OK", b"NO", b"BYE")):
                    return lines
        assert until_ok()[-1].startswith(b"OK")
        token = base64.b64encode(f"\0{address}\0{PASSWORD}".encode()).decode()
        sock.sendall(f'AUTHENTICATE "PLAIN" "{token}"\r\n'.encode())
        assert until_ok()[-1].startswith(b"OK")
        script = b'require "fileinto";\r\nkeep;\r\n'
        sock.sendall(b'PUTSCRIPT "mine" {%d+}\r\n' % len(script) + script + b"\r\n")
        assert until_ok()[-1].startswith(b"OK")
        sock.sendall(b"LISTSCRIPTS\r\n")
        assert b'"mine"' in b"".join(until_ok())
    assert list((stack.data / "mail-2" / address).rglob("mine.sieve"))  # on the user's shard


def _runs_on(pid: int, data) -> bool:
    """Whether process ``pid`` is a service of the stack on ``data``."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return str(data).encode() in fh.read()
    except OSError:
        return False


def test_a_killed_shard_costs_only_its_mailboxes_and_its_mail_arrives_after_restart(stack):
    victim = 1
    down, up = PLACED[victim], [a for s, v in PLACED.items() if s != victim for a in v]
    pid = stack.state["services"][f"mailstore-{victim}"]
    os.kill(pid, signal.SIGKILL)
    # Keep it down for the test: hold its data folder's lock, so that correo
    # up's restarts fail until we let go (a restart cannot steal the folder).
    # correo up restarts the shard half a second after it died: if that
    # restart takes the folder first, kill it too (the next restarts fail on
    # our lock), instead of waiting for a lock it will not give back.
    lock = DataDirLock(stack.data / f"mail-{victim}")
    deadline = time.monotonic() + 60
    while True:
        try:
            lock.acquire()
            break
        except FolderInUse as exc:  # the killed process is not quite gone yet, or a restart holds the folder
            assert time.monotonic() < deadline, str(exc)
            if exc.pid not in (None, pid) and _runs_on(exc.pid, stack.data):
                try:
                    os.kill(exc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)
    try:
        stack.send(up[0], EVERYONE, "while shard 1 is down")
        for address in up:
            stack.wait_for(lambda: "while shard 1 is down" in subjects(stack, address),
                           what=f"the message in {address}")
        for address in down:
            client = imapclient.IMAPClient("127.0.0.1", port=stack.port("imap"), ssl=False, timeout=30)
            with pytest.raises(LoginError, match=r"\[UNAVAILABLE\]"):
                client.login(address, PASSWORD)
            client.shutdown()
            pop = poplib.POP3("127.0.0.1", stack.port("pop3"), timeout=30)
            pop.user(address)
            with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
                pop.pass_(PASSWORD)
            pop.close()

        def deferred() -> bool:
            listing = json.loads(stack.correo("queue", "list", "-o", "json").stdout)
            states = {r["address"]: (r["state"], r["destination"]) for m in listing["messages"]
                      for r in m["recipients"]}
            return (all(states.get(a) == ("deferred", f"mailstore-{victim}") for a in down)
                    and all(states.get(a, ("delivered",))[0] == "delivered" for a in up))
        stack.wait_for(deferred, what="the down shard's recipients deferred in the queue, no one else's")
        status = stack.status()["MailDomain/scale"]["status"]
        cond = next(c for c in status["conditions"] if c["type"] == "MailstoreAvailable")
        assert (cond["status"], cond["reason"]) == ("False", "ShardsUnavailable") and "shard(s) 1 of 3" in cond["message"]
    finally:
        lock.release()
    # correo up restarts the shard; the queue retries its own mailstore within 30 s.
    for address in down:
        stack.wait_for(lambda: "while shard 1 is down" in subjects(stack, address), timeout=120,
                       what=f"the deferred message in {address} after the restart")
    assert sorted(subjects(stack, down[0])).count("while shard 1 is down") == 1


def test_the_proxy_exposes_exactly_its_documented_metrics(stack):
    """docs/metrics.md's proxy table, against the proxy's /metrics after the
    logins above (ok, failed, and unavailable while a shard was down)."""
    with urllib.request.urlopen(stack.state["endpoints"]["proxy"]["http"] + "/metrics", timeout=30) as rsp:
        text = rsp.read().decode()
    exposed: dict[str, tuple[str, set[str]]] = {}
    results: set[str] = set()
    for family in text_string_to_metric_families(text):
        if family.name.startswith("correo_"):
            name = family.name + ("_total" if family.type == "counter" else "")
            exposed[name] = (family.type, {k for s in family.samples for k in s.labels if k != "le"})
            if name == "correo_proxy_logins_total":
                results |= {s.labels["result"] for s in family.samples if s.value > 0}
    documented = documented_metrics(PROXY_SECTION)
    assert set(exposed) == set(documented), (
        f"exposed, not documented: {set(exposed) - set(documented)}; "
        f"documented, not exposed: {set(documented) - set(exposed)}")
    for name, (kind, labels) in exposed.items():
        assert kind == documented[name][0] and labels <= documented[name][1], (name, labels, documented[name])
    assert results == {"ok", "failed", "unavailable"}
