"""Exactly once through crashes, end to end on ``correo up`` (real relay,
queue and mailstore processes; the supervisor restarts what dies):

* the mailstore killed (``SIGKILL``, a fault point) between renaming a
  delivered message into the Maildir and committing its index row, and
  between storing a message and sending its ``250``: the queue delivers
  again, and the message is in the mailbox once;
* 8 clients sending 1,200 messages on port 25 while the queue and then the
  mailstore are killed with ``kill -9``: every acknowledged message arrives,
  none twice."""
from __future__ import annotations

import asyncio
import os
import signal
import smtplib
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for e2e.conftest
from e2e.conftest import start_stack  # noqa: E402

from loadsend import Load, count_copies, message  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]  # a whole stack, killed and restarted, on a loaded machine

DOMAIN = textwrap.dedent("""\
    apiVersion: correo.dev/v1alpha1
    kind: MailDomain
    metadata: {name: example-com}
    spec:
      domain: example.com
      relay:
        rateLimit: {messages: 100000, periodSeconds: 60}
    ---
    apiVersion: correo.dev/v1alpha1
    kind: Mailbox
    metadata: {name: alice}
    spec:
      address: alice@example.com
      passwordSecretRef: {name: alice-password}
    ---
    apiVersion: correo.dev/v1alpha1
    kind: Mailbox
    metadata: {name: bob}
    spec:
      address: bob@example.com
      passwordSecretRef: {name: bob-password}
    ---
    apiVersion: v1
    kind: Secret
    metadata: {name: alice-password}
    stringData: {password: wonderland}
    ---
    apiVersion: v1
    kind: Secret
    metadata: {name: bob-password}
    stringData: {password: canwefixit}
    """)
MAILBOXES = ("alice@example.com", "bob@example.com")


@pytest.fixture
def yaml_dir(tmp_path) -> Path:
    d = tmp_path / "yaml"
    d.mkdir()
    (d / "example.yaml").write_text(DOMAIN)
    return d


def maildirs(stack) -> list[Path]:
    return [stack.data / "mail" / address for address in MAILBOXES]


def queue_empty(stack) -> bool:
    return "Mail queue is empty" in stack.run("queue", "list", check=False).stdout


def send(stack, n: int, recipient: str = "bob@example.com") -> None:
    with smtplib.SMTP("127.0.0.1", stack.port("smtp"), timeout=60) as smtp:
        smtp.sendmail("sender@loadsend.test", [recipient], message(n, recipient))


class TestMailstoreKilledMidDelivery:
    def test_killed_before_the_index_commit_and_before_the_reply_each_message_arrives_once(
            self, tmp_path, yaml_dir, monkeypatch):
        fired = tmp_path / "faults"
        fired.mkdir()
        # First delivery: killed after its file is renamed into new/, before the
        # index row commits.  After the restart, the second delivery: killed
        # after it is stored, before the 250 goes out.
        monkeypatch.setenv("CORREO_FAULTS", "mailstore.store.renamed@1,mailstore.lmtp.stored@2")
        monkeypatch.setenv("CORREO_FAULTS_ONCE", str(fired))
        stack = start_stack(tmp_path / "data", [yaml_dir])
        try:
            send(stack, 1)
            stack.wait_for(lambda: (fired / "mailstore.store.renamed").exists(), 60, what="the first fault")
            stack.wait_for(lambda: count_copies(maildirs(stack)).get(1) and queue_empty(stack), 90,
                           what="message 1 delivered after the restart")
            send(stack, 2)
            stack.wait_for(lambda: (fired / "mailstore.lmtp.stored").exists(), 60, what="the second fault")
            stack.wait_for(lambda: count_copies(maildirs(stack)).get(2) and queue_empty(stack), 90,
                           what="message 2 delivered after the restart")
            time.sleep(1.0)  # nothing more is on its way: the queue is empty
            assert count_copies(maildirs(stack)) == {1: 1, 2: 1}
            log = stack.log()
            assert log.count("fault point") == 2
            assert "folder_repaired" in log  # the file without its row was adopted, with its key
            assert log.count("lmtp_already_delivered") >= 2
        finally:
            stack.stop()


class TestLoadWithKills:
    def test_1200_messages_from_8_clients_with_the_queue_then_the_mailstore_killed(self, tmp_path, yaml_dir):
        stack = start_stack(tmp_path / "data", [yaml_dir])
        try:
            load = Load(stack.port("smtp"), 1200, MAILBOXES, clients=8)
            killed: list[str] = []

            async def kill_at(service: str, acked: int) -> None:
                while len(load.acked) < acked:
                    await asyncio.sleep(0.01)
                pid = stack.state["services"][service]
                os.kill(pid, signal.SIGKILL)
                killed.append(service)
                while stack.state["services"].get(service) in (None, pid):  # restarted by the supervisor
                    await asyncio.sleep(0.1)

            async def run() -> None:
                async def kills() -> None:
                    await kill_at("queue", 300)
                    await kill_at("mailstore", 700)
                await asyncio.gather(load.run(600), kills())

            asyncio.run(run())
            assert killed == ["queue", "mailstore"]
            assert len(load.acked) == 1200
            stack.wait_for(lambda: queue_empty(stack) and len(count_copies(maildirs(stack))) >= 1200, 240,
                           interval=1.0, what="every message delivered")
            time.sleep(1.0)
            copies = count_copies(maildirs(stack))
            lost = sorted(set(range(1200)) - set(copies))
            twice = sorted(n for n, c in copies.items() if c > 1)
            print(f"load: {load.attempts} attempts, {load.failures} repeated after a failure; "
                  f"lost {len(lost)}, duplicated {len(twice)}")
            assert (lost, twice) == ([], [])
        finally:
            stack.stop()
