"""Fault points: places where a test can make a server process die at once.

Crash safety is a claim about the moments between two steps (the message
file renamed, its index row not yet committed; the message stored, its
LMTP reply not yet sent).  A test proves it by killing the process exactly
there: it starts the server with ``CORREO_FAULTS`` naming points, and the
process sends itself ``SIGKILL`` when it reaches one (no clean-up, no
flush: what ``kill -9`` or a power cut leaves).  ``name@N`` fires on the
Nth time the point is reached (default: the first).  With
``CORREO_FAULTS_ONCE`` naming a folder, a point fires once for all the
processes that share it (a marker file ``<folder>/<name>`` is made first):
a supervisor that restarts the killed service does not see it die again.

Unset (always, outside tests), :func:`point` is one dictionary lookup on an
empty dict.  The points:

=============================  ==============================================
``mailstore.lmtp.stored``      an LMTP delivery is stored (files and index
                               committed), its reply not yet written
``mailstore.store.renamed``    a delivered message's file is renamed into
                               the Maildir and fsynced, its index row (and
                               its delivery key) not yet committed
``mailstore.move.fenced``      a shard fenced a mailbox for a move (the
                               marker written), its sessions not yet ended
``mailstore.move.exporting``   a chunk of a mailbox's export was sent
``mailstore.move.imported``    a shard put a verified copy in place, its
                               reply not yet sent
``move.fenced``, ``move.copied``, ``move.flipped``  the orchestrator
                               (operator or ``correo up``) after each step
                               of a move (``correo_operator.moverun``)
=============================  ==============================================
"""
from __future__ import annotations

import os
import signal
import sys

ENV = "CORREO_FAULTS"
ONCE_ENV = "CORREO_FAULTS_ONCE"


def _parse(text: str) -> dict[str, int]:
    armed: dict[str, int] = {}
    for item in text.split(","):
        name, _, nth = item.strip().partition("@")
        if name:
            armed[name] = int(nth) if nth.isdigit() and int(nth) > 0 else 1
    return armed


_armed = _parse(os.environ.get(ENV, ""))


def point(name: str) -> None:
    """Die here (``SIGKILL``) if the test armed this point and its turn has come."""
    if not _armed:
        return
    left = _armed.get(name)
    if left is None:
        return
    if left > 1:
        _armed[name] = left - 1
        return
    del _armed[name]
    once = os.environ.get(ONCE_ENV)
    if once:
        try:
            os.close(os.open(os.path.join(once, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            return  # fired already, in this process's predecessor
    sys.stderr.write(f"correo: fault point {name} reached: killing this process\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)
