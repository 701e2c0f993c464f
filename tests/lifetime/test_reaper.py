"""A killed test run leaves nothing running (``tests/reaper.py``).

A pytest run (with the repository's ``tests/conftest.py``, so with the
watchdog) starts a server the way a careless fixture would (a session of its
own, no death signal) and is killed with SIGKILL: the server goes within
seconds.  The same run without the watchdog leaves it behind, which is what the
watchdog is for."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CHILD = '''
import json, os, subprocess, sys, time
from pathlib import Path

def test_start_a_server_and_hang():
    proc = subprocess.Popen(["/bin/sh", "-c", "sleep 3600", {marker!r}], start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    grandchild = subprocess.Popen(["/bin/sh", "-c", "sleep 3600 & wait", {marker!r} + "-group"],
                                  start_new_session=True, stdin=subprocess.DEVNULL)
    time.sleep(5)  # the watchdog notes them (every 2 s)
    Path({ready!r}).write_text(json.dumps([proc.pid, grandchild.pid]))
    time.sleep(3600)
'''


def live_with(marker: str, groups: set[int] = frozenset()) -> dict[int, str]:
    """Live processes whose command line has ``marker``, or in one of ``groups``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if (marker in cmd or int(fields[2]) in groups) and fields[0] != "Z":
            found[int(entry.name)] = cmd
    return found


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def run_and_kill(tmp_path: Path, name: str, env: dict[str, str]) -> tuple[str, list[int]]:
    marker = f"correo-reaper-{os.getpid()}-{name}-{tmp_path.name}"
    folder = ROOT / "tests" / "lifetime" / f"_child_{os.getpid()}_{name}"
    folder.mkdir()
    ready = tmp_path / f"{name}.ready"
    try:
        (folder / "test_child.py").write_text(CHILD.format(marker=marker, ready=str(ready)))
        with open(tmp_path / f"{name}.log", "ab") as log:
            child = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o",
                                      "timeout=0", str(folder / "test_child.py")], cwd=ROOT, env=env,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            pids = wait_until(lambda: ready.exists() and json.loads(ready.read_text()), 120,
                              f"the child run's servers up:\n{(tmp_path / f'{name}.log').read_text()[-2000:]}")
            assert len(live_with(marker, set(pids))) >= 3  # the shells and the backgrounded sleep
            os.kill(child.pid, signal.SIGKILL)
            child.wait(30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(30)
    finally:
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
    return marker, pids


def test_a_killed_run_leaves_no_server_behind(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CORREO_NO_REAPER"}
    marker, pids = run_and_kill(tmp_path, "reaped", env)
    wait_until(lambda: not live_with(marker, set(pids)), 30,
               f"the left servers killed by the watchdog; left: {live_with(marker, set(pids))}")


def test_without_the_watchdog_the_servers_would_stay(tmp_path):
    marker, pids = run_and_kill(tmp_path, "unreaped", {**os.environ, "CORREO_NO_REAPER": "1"})
    try:
        time.sleep(3)
        assert len(live_with(marker, set(pids))) >= 3, "nothing was left even without the watchdog: this test shows nothing"
    finally:
        for pid in pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    wait_until(lambda: not live_with(marker, set(pids)), 30, "cleaned up")
