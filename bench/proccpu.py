"""CPU time of process trees from /proc, for the benchmarks: a server's
processes (Dovecot's master, logins, auth and per-connection imap processes;
correo's one mailstore process) measured before and after a load.  A
process that exits is counted in its parent's figure for waited-for
children, so short-lived helpers are not lost."""
from __future__ import annotations

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()
    except OSError:
        return None


def tree(root: int) -> dict[int, str]:
    """``root`` and every process below it: pid → command name."""
    parent: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            parent[int(entry.name)] = int(fields[1])
    found = {root}
    grew = True
    while grew:
        grew = False
        for pid, ppid in parent.items():
            if ppid in found and pid not in found:
                found.add(pid)
                grew = True
    names = {}
    for pid in found:
        try:
            names[pid] = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            names[pid] = "?"
    return names


def tree_cpu(root: int) -> tuple[float, dict[str, float]]:
    """(CPU seconds of the whole tree, user+system, reaped children
    included; the same by command name)."""
    total = 0.0
    by_name: dict[str, float] = {}
    for pid, name in tree(root).items():
        fields = _stat(pid)
        if fields is None:
            continue
        seconds = sum(int(fields[i]) for i in (11, 12, 13, 14)) / TICK
        total += seconds
        by_name[name] = by_name.get(name, 0.0) + seconds
    return total, by_name


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    steal = fields[7] if len(fields) > 7 else 0
    return (sum(fields[:8]) - idle - steal) / TICK
