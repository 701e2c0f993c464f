"""Running the three services as local processes: start them in order, show
their logs with a prefix, restart one that crashes (with backoff), stop them
all cleanly.

Each service is ``correo serve <name> --config DIR --ports-file F``, the same
command its pod runs.  A service counts as started when it has written its
ports file (it is listening) and its ``/readyz`` answers.

Helpers the services need (:class:`Aux`: a managed rspamd, ``local.rspamd``)
are started first, each with its own command and readiness check, and are
supervised the same way.
"""
from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from correo_server import logs

from .layout import Layout, read_json

log = logs.get("correo.up")

ORDER = ("mailstore", "queue", "relay", "autoconfig")  # each needs the one before it; autoconfig needs none
HTTP_PORT = {"mailstore": "mailstore_http", "queue": "queue_http", "relay": "relay_http",
             "autoconfig": "autoconfig_http", "proxy": "proxy_http"}


def services(shards: int = 1, queues: int = 1) -> tuple[str, ...]:
    """The processes of a stack, in start order: with mailstore shards,
    ``mailstore-0`` … ``mailstore-<n-1>`` and the ``proxy`` in front of them;
    with queue replicas, ``queue-0`` … ``queue-<n-1>``."""
    queue = ("queue",) if queues <= 1 else tuple(f"queue-{i}" for i in range(queues))
    if shards <= 1:
        return ("mailstore", *queue, "relay", "autoconfig")
    return (*(f"mailstore-{i}" for i in range(shards)), "proxy", *queue, "relay", "autoconfig")


def http_port_name(name: str) -> str:
    if name.startswith("mailstore-"):
        return f"mailstore{name.partition('-')[2]}_http"
    if name.startswith("queue-"):  # replica 0 has the queue's own port
        n = int(name.partition("-")[2])
        return "queue_http" if n == 0 else f"queue{n}_http"
    return HTTP_PORT[name]


def _die_with_parent(parent: int):
    """A preexec function: the child gets SIGTERM when ``correo up`` dies,
    even by SIGKILL (Linux's parent-death signal), so no service is left
    running orphaned on the data folder."""
    def preexec() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return  # not Linux: the lock on the data folder still protects it
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
    return preexec


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


@dataclass(frozen=True)
class Aux:
    """A helper process started before the services (rspamd)."""

    argv: list[str]
    ready: Callable[[], bool]  # blocking; asked in a thread
    timeout: float = 300.0
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    pump: asyncio.Task | None = None
    stopping: bool = False


@dataclass
class Supervisor:
    layout: Layout
    ports: dict[str, int]
    log_format: str = "console"
    out = sys.stdout
    children: dict[str, Child] = field(default_factory=dict)
    order: tuple[str, ...] = ORDER
    aux: dict[str, Aux] = field(default_factory=dict)
    _watch: asyncio.Task | None = None

    def add_aux(self, name: str, aux: Aux) -> None:
        """A helper to start before the services (and supervise like them)."""
        self.aux[name] = aux
        if name not in self.order:
            self.order = (name, *self.order)

    def command(self, name: str) -> list[str]:
        service, _, ordinal = name.partition("-")
        return [sys.executable, "-m", "correo_operator.cli", "serve", service, "--config", str(self.layout.config),
                "--ports-file", str(self.layout.ports_file(name)), "--log-format", self.log_format,
                *([("--replica" if service == "queue" else "--shard"), ordinal] if ordinal else [])]

    async def _pump(self, child: Child) -> None:
        """Copy a service's output to ours, whole lines only (two services
        never mix within a line), as bytes, never decoded or re-rendered:
        JSON lines as they are (each names its ``service``), console lines
        with the service's name in front, put there by one ``replace`` per
        piece read (line by line cost ~7% of all CPU under load)."""
        assert child.process and child.process.stdout
        stdout = child.process.stdout  # this process's: a successor (handover) gets a pump of its own
        prefix = f"{child.name:<9}| ".encode() if self.log_format != "json" else b""
        out = getattr(self.out, "buffer", None)
        pending = b""
        while chunk := await stdout.read(65536):
            cut = chunk.rfind(b"\n") + 1
            if not cut:
                pending += chunk
                continue
            lines, pending = pending + chunk[:cut], chunk[cut:]
            if prefix:
                lines = prefix + lines[:-1].replace(b"\n", b"\n" + prefix) + b"\n"
            out = self._write_or_drop(out, lines, child.name)
        if pending:
            self._write_or_drop(out, prefix + pending + b"\n", child.name)

    def _write_or_drop(self, out, data: bytes, name: str):
        """Write, or after our own output failed (a closed terminal, a pipe
        to a pager that quit, a full disk) drop: the service's output is
        still read, so that it never blocks on a full pipe, and stopping it
        later is not spoiled by an error that is not its own."""
        if out is False:
            return False
        try:
            self._write(out, data)
        except (OSError, ValueError) as exc:
            try:
                log.warning("service_log_dropped", service=name, error=str(exc))
            except (OSError, ValueError):
                pass  # our stderr is gone too
            return False
        return out

    def _write(self, out, data: bytes) -> None:
        if out is not None:
            self.out.flush()  # what was written as text so far goes first
            out.write(data)
            out.flush()
        else:
            self.out.write(data.decode("utf-8", "replace"))
            self.out.flush()

    async def spawn(self, name: str, *, timeout: float = 30.0) -> None:
        ports_file = self.layout.ports_file(name)
        ports_file.unlink(missing_ok=True)
        child = self.children.setdefault(name, Child(name))
        env = {"MALLOC_ARENA_MAX": "2", **os.environ, "PYTHONUNBUFFERED": "1"}  # as the pods (render.py)
        aux = self.aux.get(name)
        if aux is not None:
            env.update(aux.env)
            timeout = max(timeout, aux.timeout)
        child.process = await asyncio.create_subprocess_exec(
            *(aux.argv if aux is not None else self.command(name)), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
            start_new_session=True,  # Ctrl-C reaches us, not them: we stop them in order
            preexec_fn=_die_with_parent(os.getpid()))
        child.started_at = time.monotonic()
        child.stopping = False
        child.pump = asyncio.create_task(self._pump(child))
        deadline = time.monotonic() + timeout
        port = self.ports[http_port_name(name)] if aux is None else 0
        while time.monotonic() < deadline:
            if child.process.returncode is not None:
                raise RuntimeError(f"{name} exited with code {child.process.returncode} while starting "
                                   "(its log is above)")
            if aux is not None:
                if await asyncio.to_thread(aux.ready):
                    return
            elif read_json(ports_file) is not None and await asyncio.to_thread(_ready, port):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{name} did not become ready within {timeout:.0f}s")

    async def start(self) -> None:
        shards = [n for n in self.order if n.startswith("mailstore-")]
        if shards:  # independent of each other: started together
            await asyncio.gather(*(self.spawn(n) for n in shards))
        for name in self.order:
            if name not in shards:
                await self.spawn(name)
        self._watch = asyncio.create_task(self._supervise())

    async def _supervise(self) -> None:
        """Restart a service that exits on its own, with a growing pause."""
        while True:
            await asyncio.sleep(0.2)
            for name in self.order:
                child = self.children.get(name)  # (a queue replica that went: gone from both)
                proc = child.process if child is not None else None
                if child is None or proc is None or proc.returncode is None or child.stopping:
                    continue
                uptime = time.monotonic() - child.started_at
                child.restarts = 0 if uptime > 60 else child.restarts + 1
                pause = min(2 ** max(child.restarts - 1, 0) * 0.5, 30.0)
                log.warning("service_exited", service=name, code=proc.returncode,
                            restart_in_seconds=pause, restarts=child.restarts)
                await asyncio.sleep(pause)
                try:
                    await self.spawn(name)
                    log.info("service_restarted", service=name, pid=child.process.pid)
                except RuntimeError as exc:
                    log.error("service_restart_failed", service=name, error=str(exc))

    async def restart(self, names: tuple[str, ...] | None = None) -> None:
        """Stop and start services in dependency order."""
        names = names or self.order
        for name in reversed(names):
            await self._stop_one(self.children[name])
        for name in names:
            await self.spawn(name)

    async def roll(self) -> None:
        """Apply a new configuration with the relay kept up: each service
        behind it is restarted on its own (the queue keeps mail for a
        mailstore that restarts; the relay's hand-off waits for a queue that
        restarts), then the relay is handed over (:meth:`handover`), so that
        no connection is refused at any time.  Helpers (rspamd) keep
        running: their configuration is not the MailDomain's."""
        for name in self.order:
            if name in self.aux:
                continue
            if name == "relay":
                await self.handover(name)
            else:
                await self._stop_one(self.children[name])
                await self.spawn(name)

    async def handover(self, name: str) -> None:
        """Start a second ``name`` next to the running one (its listeners
        share the ports, SO_REUSEPORT), then stop the old one: it stops
        accepting, lets a message in DATA finish, and says 421 to the rest.
        If the new one cannot start, the old one keeps running."""
        child = self.children[name]
        old, old_pump = child.process, child.pump
        try:
            await self.spawn(name)
        except RuntimeError:
            if child.process is not None and child.process.returncode is None:
                await self._terminate(name, child.process, child.pump)
            child.process, child.pump = old, old_pump
            raise
        if old is not None:
            await self._terminate(name, old, old_pump)
        log.info("service_handed_over", service=name, pid=child.process.pid)

    async def _stop_one(self, child: Child, timeout: float = 15.0) -> None:
        child.stopping = True
        if child.process is not None:
            await self._terminate(child.name, child.process, child.pump, timeout)

    @staticmethod
    async def _terminate(name: str, proc: asyncio.subprocess.Process, pump: asyncio.Task | None,
                         timeout: float = 15.0) -> None:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except asyncio.TimeoutError:
                log.warning("service_killed", service=name, after_seconds=timeout)
                proc.kill()
                await proc.wait()
        if pump:
            try:
                await asyncio.wait_for(pump, 2)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                pump.cancel()

    async def stop(self) -> None:
        """Stop every child, relay first (stop taking mail), then the queue,
        then the mailstore; a failure stopping one never leaves the others
        running."""
        if self._watch:
            self._watch.cancel()
        for name in reversed(self.order):
            if name in self.children:
                try:
                    await self._stop_one(self.children[name])
                except Exception as exc:  # noqa: BLE001 - the next ones must still be stopped
                    log.error("service_stop_failed", service=name, error=repr(exc))

    def pids(self) -> dict[str, int]:
        return {n: c.process.pid for n, c in self.children.items() if c.process and c.process.returncode is None}


def ports_of(layout: Layout, name: str) -> dict[str, int]:
    return read_json(layout.ports_file(name)) or {}


def cleanup(path: Path) -> None:
    path.unlink(missing_ok=True)
