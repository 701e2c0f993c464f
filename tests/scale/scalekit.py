"""A real ``correo up`` with mailstore shards for the scale tests: YAML with
mailboxes placed on every shard, the stack started so that it dies with the
test process (parent-death signal), and small clients."""
from __future__ import annotations

import ctypes
import json
import os
import signal
import smtplib
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import yaml

from correo_operator import placement

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "scale.test"
PASSWORD = "correct horse battery"


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def mailboxes_on_every_shard(shards: int, per_shard: int) -> dict[int, list[str]]:
    """Addresses that rendezvous hashing puts ``per_shard`` on each shard."""
    out: dict[int, list[str]] = {i: [] for i in range(shards)}
    i = 0
    while any(len(v) < per_shard for v in out.values()):
        address = f"user{i}@{DOMAIN}"
        shard = placement.rendezvous(address, shards)
        if len(out[shard]) < per_shard:
            out[shard].append(address)
        i += 1
    return out


def write_yaml(folder: Path, shards: int, addresses: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    docs = [{"apiVersion": "correo.dev/v1alpha1", "kind": "MailDomain", "metadata": {"name": "scale"},
             "spec": {"domain": DOMAIN, "hostname": f"mail.{DOMAIN}", "mailstore": {"shards": shards}}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pw"}, "stringData": {"password": PASSWORD}}]
    for a in addresses:
        docs.append({"apiVersion": "correo.dev/v1alpha1", "kind": "Mailbox",
                     "metadata": {"name": a.partition("@")[0]},
                     "spec": {"address": a, "passwordSecretRef": {"name": "pw"}}})
    (folder / "scale.yaml").write_text(yaml.safe_dump_all(docs))


@dataclass
class UpStack:
    data: Path
    process: subprocess.Popen
    log_path: Path

    @property
    def state(self) -> dict:
        return json.loads((self.data / "state.json").read_text())

    def port(self, name: str) -> int:
        return self.state["ports"][name]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def correo(self, *args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "correo_operator.cli", *args]
        cmd += ["--data", str(self.data)] if args[0] != "queue" else []
        if args[0] == "queue":
            cmd = [sys.executable, "-m", "correo_operator.cli", "queue", "--data", str(self.data), *args[1:]]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT, check=True)

    def status(self) -> dict:
        doc = json.loads(self.correo("status", "-o", "json").stdout)
        return {f"{o['kind']}/{o['metadata']['name']}": o for o in doc["items"]}

    def wait_for(self, predicate, timeout: float = 60.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = predicate()
                if last:
                    return last
            except Exception as exc:  # noqa: BLE001 - keep polling, report the last error
                last = exc
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}; last: {last!r}\n--- correo up log ---\n{self.log()[-8000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def send(self, sender: str, rcpts: list[str], subject: str) -> None:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = sender, ", ".join(rcpts), subject
        msg.set_content(f"{subject}\n")
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with smtplib.SMTP("127.0.0.1", self.port("submission"), timeout=60) as smtp:
            smtp.starttls(context=context)
            smtp.login(sender, PASSWORD)
            smtp.send_message(msg, from_addr=sender, to_addrs=rcpts)


def start(data: Path, yaml_dir: Path, services: int, timeout: float = 120.0, extra: tuple[str, ...] = (),
          env: dict | None = None) -> UpStack:
    """``extra``: more arguments of ``correo up``; ``env``: more environment for
    it and its services (fault points...)."""
    log_path = data.parent / f"{data.name}-up.log"
    log = open(log_path, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "correo_operator.cli", "up", str(yaml_dir), "--data", str(data),
                             "--ephemeral-ports", *extra], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                            preexec_fn=_die_with_parent, env={**os.environ, **(env or {})})
    stack = UpStack(data, proc, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"correo up exited with {proc.returncode}:\n{stack.log()[-8000:]}")
        try:
            state = stack.state  # this process's (a crashed correo up leaves its own behind)
            if state.get("pid") == proc.pid and len(state.get("services", {})) == services \
                    and "correo is up" in stack.log():
                return stack
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    stack.stop()
    raise AssertionError(f"correo up did not come up in {timeout}s:\n{stack.log()[-8000:]}")
