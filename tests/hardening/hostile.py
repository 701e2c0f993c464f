"""Hostile sessions for the memory tests and ``bench/hostile_memory.py``:
a service in a process of its own (:mod:`serve_inproc`), whose resident
memory is sampled while clients do what issue 10's attack run did:

* open DATA: on port 25 with no login, ``DATA`` and then megabytes of a
  message without its final dot, on many connections at once, which then
  close (the transfer aborted);
* a pre-login literal: ``a LOGIN {27262976}`` on IMAP, then the octets.

:class:`Sampler` keeps the peak of ``VmRSS`` while an attack runs."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from hardening_support import rss_bytes

HERE = Path(__file__).resolve().parent
MiB = 1024 * 1024


class ServiceProcess:
    """``serve_inproc.py KIND WORKDIR`` running; ``ports``, ``rss()``, ``stop()``."""

    def __init__(self, kind: str, workdir: Path, overrides: dict | None = None,
                 env: dict[str, str] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        environ = {**os.environ, "CORREO_TEST_CONFIG": json.dumps(overrides or {}), **(env or {})}
        self.log = open(workdir / "service.log", "wb")
        self.proc = subprocess.Popen([sys.executable, str(HERE / "serve_inproc.py"), kind, str(workdir)],
                                     env=environ, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 120
        while not (workdir / "ports.json").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{kind} did not start: " + (workdir / "service.log").read_text()[-2000:])
            time.sleep(0.05)
        self.ports: dict[str, int] = json.loads((workdir / "ports.json").read_text())

    def rss(self) -> int:
        return rss_bytes(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Sampler:
    """The peak resident memory of a process while the ``with`` block runs."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid, self.interval = pid, interval
        self.peak = 0
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except (FileNotFoundError, RuntimeError):
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> "Sampler":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


async def _expect(reader: asyncio.StreamReader, code: bytes) -> None:
    while True:
        line = await asyncio.wait_for(reader.readline(), 60)
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            if not line.startswith(code):
                raise AssertionError(f"expected {code!r}, got {line!r}")
            return


async def open_data(port: int, size: int, recipient: str = "alice@example.com") -> asyncio.StreamWriter:
    """A connection in DATA that has sent ``size`` octets of a message and
    no final dot (the writer, to close)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await _expect(reader, b"220")
    for line, code in ((b"EHLO attacker.test", b"250"), (b"MAIL FROM:<x@attacker.test>", b"250"),
                       (f"RCPT TO:<{recipient}>".encode(), b"250"), (b"DATA", b"354")):
        writer.write(line + b"\r\n")
        await _expect(reader, code)
    block = (b"x" * 76 + b"\r\n") * 8192  # 624 KiB of lines
    sent = 0
    while sent < size:
        writer.write(block)
        await writer.drain()
        sent += len(block)
    return writer


async def open_data_round(port: int, connections: int, size: int) -> None:
    """``connections`` transfers of ``size`` octets at once, then all aborted."""
    writers = await asyncio.gather(*(open_data(port, size) for _ in range(connections)))
    await asyncio.sleep(0.5)  # the last octets read on the other side
    for w in writers:
        w.close()
    for w in writers:
        try:
            await w.wait_closed()
        except ConnectionError:
            pass


async def prelogin_literal(port: int, size: int) -> asyncio.StreamWriter:
    """``a LOGIN {size}`` on IMAP and, whatever the answer, ``size`` octets."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await asyncio.wait_for(reader.readline(), 60)
    writer.write(f"a LOGIN {{{size}}}\r\n".encode())
    await writer.drain()
    block = b"y" * 65536

    async def send() -> None:
        sent = 0
        while sent < size:
            writer.write(block)
            await writer.drain()
            sent += len(block)

    try:
        await asyncio.wait_for(send(), 60)  # a server that stopped reading: we stop too
    except (ConnectionError, asyncio.TimeoutError):
        pass
    return writer


def open_connections(service: ServiceProcess, name: str = "correo_relay_connections_open") -> float:
    """A gauge of the service's /metrics (the relay's open connections)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{service.ports['http']}/metrics", timeout=30) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    raise LookupError(name)


def wait_closed(service: ServiceProcess, timeout: float = 120) -> float:
    """Wait until the relay has seen every connection go (it reads what the
    clients sent before their close first); the seconds it took."""
    start = time.monotonic()
    while open_connections(service) > 0:
        if time.monotonic() - start > timeout:
            raise AssertionError(f"the relay still holds {open_connections(service):.0f} connections "
                                 f"{timeout:.0f} s after their clients closed them")
        time.sleep(0.1)
    return time.monotonic() - start


def spool_files_open(pid: int) -> int:
    """How many of the relay's temporary message files a process has open."""
    fds = Path(f"/proc/{pid}/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            count += "correo-data-" in os.readlink(fd)
        except OSError:
            continue
    return count
