"""End-to-end fixtures: a real ``correo up`` (three real server processes) on
ephemeral ports with its own data folder, a loopback DNS server, and
loopback SMTP servers playing remote MX hosts."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from correo_operator.local.supervisor import ORDER as SERVICES

ROOT = Path(__file__).resolve().parents[2]


def correo_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "correo_operator.cli", *args]


@dataclass
class Stack:
    """A running ``correo up``."""

    data: Path
    process: subprocess.Popen
    log_path: Path
    paths: list[Path]

    @property
    def state(self) -> dict:
        return json.loads((self.data / "state.json").read_text())

    def port(self, name: str) -> int:
        return self.state["ports"][name]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(correo_cmd(*args, "--data", str(self.data)) if args[0] != "queue" else
                                correo_cmd("queue", "--data", str(self.data), *args[1:]),
                                capture_output=True, text=True, timeout=60, cwd=ROOT)
        if check and result.returncode != 0:
            raise AssertionError(f"correo {' '.join(args)} failed: {result.stdout}\n{result.stderr}")
        return result

    def status(self) -> dict:
        doc = json.loads(self.run("status", "-o", "json").stdout)
        return {f"{o['kind']}/{o['metadata']['name']}": o for o in doc["items"]} | {"endpoints": doc["endpoints"]}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, predicate, timeout: float = 30.0, interval: float = 0.2, what: str = "condition"):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = predicate()
                if last:
                    return last
            except Exception as exc:  # noqa: BLE001 - keep polling, report the last error
                last = exc
            time.sleep(interval)
        raise AssertionError(f"timed out waiting for {what}; last: {last!r}\n--- correo up log ---\n{self.log()[-6000:]}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def start_stack(data: Path, paths: list[Path], *extra: str, timeout: float = 60.0) -> Stack:
    log_path = data.parent / f"{data.name}-up.log"
    log = open(log_path, "ab")
    proc = subprocess.Popen(correo_cmd("up", *map(str, paths), "--data", str(data), "--ephemeral-ports", *extra),
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    stack = Stack(data, proc, log_path, paths)

    def ready():
        if proc.poll() is not None:
            raise AssertionError(f"correo up exited with {proc.returncode}:\n{stack.log()[-6000:]}")
        state = json.loads((data / "state.json").read_text())
        everyone = len(state.get("services", {})) >= len(SERVICES)  # plus helpers (a managed rspamd)
        return everyone and ("Try it" in stack.log() or "correo is up" in stack.log())

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ready():
                return stack
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    stack.stop()
    raise AssertionError(f"correo up did not come up in {timeout}s:\n{stack.log()[-6000:]}")


@pytest.fixture
def quickstart(tmp_path) -> Path:
    """A private copy of examples/quickstart (tests edit it)."""
    dest = tmp_path / "yaml"
    shutil.copytree(ROOT / "examples" / "quickstart", dest)
    return dest


@pytest.fixture
def stack(tmp_path, quickstart):
    s = start_stack(tmp_path / "data", [quickstart])
    yield s
    s.stop()


# ---------------------------------------------------------------------------
# Loopback DNS and remote MX hosts
# ---------------------------------------------------------------------------

@dataclass
class Zone:
    """Records the loopback DNS server answers: name → list of (type, value)."""

    records: dict[str, list[tuple[str, object]]] = field(default_factory=dict)

    def add(self, name: str, rtype: str, value) -> None:
        self.records.setdefault(name.rstrip(".").lower(), []).append((rtype, value))


@pytest.fixture
def dns_server():
    from dnslib import AAAA, MX, QTYPE, RR, A, TXT
    from dnslib.server import BaseResolver, DNSServer

    zone = Zone()

    class Resolver(BaseResolver):
        def resolve(self, request, handler):
            reply = request.reply()
            qname = str(request.q.qname).rstrip(".").lower()
            qtype = QTYPE[request.q.qtype]
            found = zone.records.get(qname)
            if found is None:
                reply.header.rcode = 3  # NXDOMAIN
                return reply
            for rtype, value in found:
                if rtype != qtype:
                    continue
                if rtype == "MX":
                    pref, host = value
                    rdata = MX(host, pref)
                elif rtype == "A":
                    rdata = A(value)
                elif rtype == "AAAA":
                    rdata = AAAA(value)
                else:
                    rdata = TXT(value)
                reply.add_answer(RR(request.q.qname, getattr(QTYPE, rtype), rdata=rdata, ttl=60))
            return reply

    server = DNSServer(Resolver(), port=0, address="127.0.0.1", tcp=False)
    server.start_thread()
    port = server.server.server_address[1]
    zone.address = f"127.0.0.1:{port}"
    yield zone
    server.stop()


class RecordingMX:
    """A loopback SMTP server that answers every RCPT with a fixed reply.

    ``hold_when`` (a blocking callable, asked before each RCPT reply until
    :meth:`release`) makes the MX keep the sender waiting for its reply: a
    queue whose attempt is in flight keeps the message as it is (deferred,
    delayed), so a test can look at that state for as long as it needs and
    then let the next step happen, instead of racing the queue's clock."""

    def __init__(self, host: str, port: int, rcpt_reply: str = "451 4.7.1 Greylisted, try again later",
                 hold_when=None):
        from aiosmtpd.controller import Controller

        self.rcpt_reply = rcpt_reply
        self.received: list = []
        self.attempts = 0
        self.hold_when = hold_when
        self.holding = threading.Event()  # an attempt waits for its reply
        self._released = threading.Event()
        outer = self

        class Handler:
            async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
                outer.attempts += 1
                loop = asyncio.get_running_loop()
                if (outer.hold_when is not None and not outer._released.is_set()
                        and await loop.run_in_executor(None, outer.hold_when)):
                    outer.holding.set()
                    await loop.run_in_executor(None, outer._released.wait, 300)
                if outer.rcpt_reply.startswith("250"):
                    envelope.rcpt_tos.append(address)
                return outer.rcpt_reply

            async def handle_DATA(self, server, session, envelope):
                outer.received.append(envelope)
                return "250 2.0.0 OK"

        self.controller = Controller(Handler(), hostname=host, port=port)

    def release(self) -> None:
        """Answer the held attempt, and every later one, at once."""
        self._released.set()

    def __enter__(self):
        self.controller.start()
        return self

    def __exit__(self, *exc):
        self.release()
        self.controller.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())
