"""The orchestrator of a move dies (``correo up`` killed with SIGKILL right
after the fence, fault point ``move.fenced``): its services stop with it;
``correo up`` started again finds the fence on the old shard and finishes
the move from there — one owner, every message once, same UIDVALIDITY and
UIDs."""
from __future__ import annotations

import os
import time

import pytest

from . import scalekit
from .test_move_up import ON_0, inbox, mailbox_status, pin, send_many, wait_delivered

pytestmark = pytest.mark.e2e

MOVED = ON_0[1]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_move_resumes_after_the_orchestrator_is_killed(tmp_path):
    scalekit.write_yaml(tmp_path / "yaml", 2, ON_0)
    once = tmp_path / "faults-fired"
    once.mkdir()
    env = {"CORREO_FAULTS": "move.fenced", "CORREO_FAULTS_ONCE": str(once), "CORREO_MOVE_GRACE_SECONDS": "2"}
    stack = scalekit.start(tmp_path / "data", tmp_path / "yaml", services=6, env=env)
    try:
        before = send_many(stack, MOVED, "before", 8)
        validity, seen = wait_delivered(stack, MOVED, before)
        children = list(stack.state["services"].values())
        stack.yaml_file = tmp_path / "yaml" / "scale.yaml"
        pin(stack, MOVED, 1)
        stack.process.wait(120)
        assert stack.process.returncode == -9 and (once / "move.fenced").exists()
        deadline = time.monotonic() + 60
        while not all(gone(p) for p in children):  # its services stop with it (parent-death signal)
            assert time.monotonic() < deadline, "the services outlived correo up"
            time.sleep(0.2)
        assert (tmp_path / "data" / "mail" / MOVED / "correo-move-out.json").exists()  # the fence held

        stack = scalekit.start(tmp_path / "data", tmp_path / "yaml", services=6, env=env)
        stack.wait_for(lambda: mailbox_status(stack, MOVED).get("shard") == 1, 120, "the move finished")
        after = send_many(stack, MOVED, "after", 4)
        after_validity, found = wait_delivered(stack, MOVED, before + after)
        assert after_validity == validity
        assert {uid: s for uid, s in found.items() if uid in seen} == seen
        stack.wait_for(lambda: not (tmp_path / "data" / "mail" / MOVED).exists(), 60, "the old copy removed")
        assert inbox(stack, MOVED)[0] == validity
    finally:
        stack.stop()
