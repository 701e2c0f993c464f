"""A safety net: no process a test run started outlives it, however the run ends.

``tests/conftest.py`` starts this as a small watchdog process beside pytest (a
session of its own, so a signal to pytest's process group does not reach it).
Pytest holds the write end of a pipe whose read end is the watchdog's stdin;
the kernel closes it when pytest exits or is killed (``kill -9``, the OOM
killer, a CI timeout), and the watchdog sees end-of-file at once.

While pytest runs, the watchdog notes every two seconds which processes
descend from it (``/proc/<pid>/task/<tid>/children``), with their start times.
At the end it kills, with SIGKILL, those still alive (same pid *and* start
time, never a recycled pid), with the process groups they lead: servers a test
started (``correo up``, dovecot, prometheus, rspamd, a control plane), even in
a session of their own, even when the fixture that should have stopped them
never ran.  Each kill is logged to ``$TMPDIR/correo-test-reaper.log``.

This is the net under the first line: fixtures stop what they start, and
long-lived helpers also get PR_SET_PDEATHSIG (``tests/envtest/controlplane.py``,
``correo up``'s supervisor), which acts at once and needs no watchdog.
Set ``CORREO_NO_REAPER=1`` to run without it.

Run as a script: ``python reaper.py PID`` watches PID (stdin: the pipe).
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

INTERVAL = 2.0


def _stat(pid: int) -> tuple[int, int] | None:
    """(start time, process group) of a live, non-zombie process, or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19]), int(fields[2])  # starttime (field 22), pgrp (field 5)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            out += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except (OSError, ValueError):
            continue
    return out


def descendants(root: int, exclude: int) -> dict[int, tuple[int, int]]:
    """pid -> (start time, process group) of every live process below ``root``."""
    found: dict[int, tuple[int, int]] = {}
    todo = _children(root)
    while todo:
        pid = todo.pop()
        if pid == exclude or pid in found:
            continue
        stat = _stat(pid)
        if stat is None:
            continue
        found[pid] = stat
        todo += _children(pid)
    return found


def reap(seen: dict[int, tuple[int, int]], log) -> int:
    """SIGKILL what of ``seen`` is still the same process, and the groups they lead."""
    alive = {pid: stat for pid, stat in seen.items() if _stat(pid) == stat}
    for pid, (_, pgid) in alive.items():
        if pgid == pid:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
    for pid in alive:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:300]
        except OSError:
            cmd = "?"
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue
        log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} killed {pid} left by the test run: {cmd}\n")
    return len(alive)


def watch(root: int) -> None:
    seen: dict[int, tuple[int, int]] = {}
    me = os.getpid()
    while True:
        ready, _, _ = select.select([sys.stdin.fileno()], [], [], INTERVAL)
        if ready and not os.read(sys.stdin.fileno(), 4096):
            break  # pytest is gone: the pipe's last writer closed
        seen.update(descendants(root, me))
        seen = {pid: stat for pid, stat in seen.items() if _stat(pid) == stat}
    # Its children, reparented when it died, are no longer below it: the last notes say who.
    with open(Path(tempfile.gettempdir()) / "correo-test-reaper.log", "a") as log:
        reap(seen, log)


def start() -> subprocess.Popen | None:
    """Start the watchdog for this process (pytest); None when disabled."""
    if os.environ.get("CORREO_NO_REAPER", "") not in ("", "0") or not os.path.isdir("/proc/self/task"):
        return None
    read, write = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, __file__, str(os.getpid())], stdin=read,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    finally:
        os.close(read)
    # The write end stays open (and out of every child: not inheritable) until this process ends.
    start.keep = write  # type: ignore[attr-defined]
    return proc


if __name__ == "__main__":
    for sig in (signal.SIGINT, signal.SIGHUP):  # a Ctrl-C or a closed terminal is pytest's to handle
        signal.signal(sig, signal.SIG_IGN)
    watch(int(sys.argv[1]))
