"""Nothing the tests start outlives a killed pytest.

A pytest run that holds a control plane (etcd, kube-apiserver,
kube-controller-manager) and the kubelet-less node with a pod on it is killed
with SIGKILL, as a CI timeout or the OOM killer would: no ``finally`` runs, and
yet every one of those processes goes away (``controlplane.spawn``: a session
of its own and PR_SET_PDEATHSIG).  This costs a second control plane, once.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from controlplane import HOW_TO_GET, find_assets, spawn
from envkit import unavailable, wait_for

HERE = Path(__file__).resolve().parent

CHILD = '''
import json, os, sys, time
from pathlib import Path
sys.path.insert(0, {here!r})
from controlplane import ControlPlane, find_assets
from node import Node, NodeUnavailable

def test_hold_a_control_plane():
    root = Path({root!r})
    cp = ControlPlane(find_assets(), root / "cp").start()
    cp.ensure_controller_manager()
    pids = {{name: p.popen.pid for name, p in cp.processes.items()}}
    try:
        node = Node(root / "node", api_port=cp.port).start()
    except NodeUnavailable as exc:
        node_error = str(exc)
    else:
        node_error = ""
        pids["node"] = node.proc.pid
        node.run_pod("sleeper", {{"metadata": {{}}, "spec": {{"containers": [
            {{"name": "c", "command": ["/bin/sh", "-c", "sleep 3600", {marker!r}]}}]}}}}, [])
    (root / "held.json").write_text(json.dumps({{"pids": pids, "port": cp.port, "node_error": node_error}}))
    time.sleep(3600)
'''


def live_processes() -> dict[int, tuple[str, int]]:
    """pid -> (command line, process group) of every process but zombies (whose parent has
    not reaped them yet: they run nothing)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            found[int(entry.name)] = (cmdline.strip(), int(fields[3]))
    return found


def processes_mentioning(text: str) -> dict[int, str]:
    """Live processes whose command line contains ``text``."""
    return {pid: cmd for pid, (cmd, _) in live_processes().items() if text in cmd}


def left_of(root: Path, marker: str, groups: set[int]) -> dict[int, str]:
    return {pid: cmd for pid, (cmd, pgid) in live_processes().items()
            if str(root) in cmd or marker in cmd or pgid in groups}


def test_a_killed_pytest_leaves_no_control_plane_node_or_pod_behind(tmp_path):
    if find_assets() is None:
        unavailable(HOW_TO_GET)
    root = tmp_path / "held"
    root.mkdir()
    marker = f"correo-lifetime-{os.getpid()}-{tmp_path.name}"
    (tmp_path / "test_child.py").write_text(textwrap.dedent(CHILD.format(here=str(HERE), root=str(root),
                                                                         marker=marker)))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    with open(tmp_path / "child.log", "ab") as log:
        child = spawn([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "timeout=0",
                       "-c", str(tmp_path / "pytest.ini"), str(tmp_path / "test_child.py")], stdout=log,
                      cwd=tmp_path)
    try:
        held = wait_for(lambda: (root / "held.json").exists() and json.loads((root / "held.json").read_text()),
                        timeout=240, what=lambda: f"the child's control plane up:\n"
                                                  f"{(tmp_path / 'child.log').read_text()[-3000:]}")
        assert child.poll() is None
        started = processes_mentioning(str(root))
        names = {"etcd", "kube-apiserver", "kube-controller-manager"} | ({"node"} if not held["node_error"] else set())
        assert set(held["pids"]) == names
        assert set(held["pids"].values()) <= set(started), started
        if not held["node_error"]:
            wait_for(lambda: processes_mentioning(marker), timeout=30, what="the pod running on the child's node")

        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)

        # Nothing of it left: no process of its command lines, none in its process groups.
        groups = set(held["pids"].values())
        wait_for(lambda: not left_of(root, marker, groups), timeout=60,
                 what=lambda: f"every process of the killed run gone; left: {left_of(root, marker, groups)}")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
        for pid in processes_mentioning(str(root)):
            os.kill(pid, signal.SIGKILL)
