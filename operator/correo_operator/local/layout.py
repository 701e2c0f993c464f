"""The data folder of a local stack, and ``state.json``, through which the
running ``correo up`` tells other commands (``status``, ``apply``, ``queue``)
where everything is.

::

    DATA/config/        the configuration folder (correo.yaml, directory.yaml, tls/, dkim/, smarthost/)
    DATA/queue/         the queue's spool (replica 0 when spec.queue.replicas > 1)
    DATA/queue-<n>/     the spool of queue replica n
    DATA/mail/          the mailstore's Maildirs (shard 0 when spec.mailstore.shards > 1)
    DATA/mail-<n>/      the Maildirs of mailstore shard n
    DATA/run/           ports files of the running services
    DATA/state.json     pid, YAML paths, endpoints, object generations
    DATA/applied.json   the resources that run (status reads these, not the YAML being edited)
    DATA/status.json    the last status documents (for lastTransitionTime)
"""
from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from correo_server import localstate, osutil


@dataclass(frozen=True)
class Layout:
    root: Path

    @classmethod
    def at(cls, data: str | os.PathLike[str]) -> "Layout":
        return cls(Path(data).resolve())

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def spool(self) -> Path:
        return self.root / "queue"

    def replica_spool(self, replica: int) -> Path:
        """Spool of queue replica ``replica``: replica 0 keeps ``DATA/queue``
        (what one queue held stays on replica 0), the others ``DATA/queue-<n>``."""
        return self.spool if replica == 0 else self.root / f"queue-{replica}"

    def replica_spools(self) -> dict[int, Path]:
        """Every queue spool in the data folder, by replica (for draining
        the ones a smaller stack no longer runs)."""
        found = {0: self.spool}
        for path in self.root.glob("queue-*"):
            suffix = path.name.partition("-")[2]
            if suffix.isdigit() and int(suffix) > 0 and path.is_dir():
                found[int(suffix)] = path
        return dict(sorted(found.items()))

    @property
    def mail(self) -> Path:
        return self.root / "mail"

    def shard_mail(self, shard: int) -> Path:
        """Mail of mailstore shard ``shard``: shard 0 keeps ``DATA/mail`` (what
        one mailstore held stays on shard 0), the others ``DATA/mail-<n>``."""
        return self.mail if shard == 0 else self.root / f"mail-{shard}"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def applied_file(self) -> Path:
        return self.root / "applied.json"

    @property
    def status_file(self) -> Path:
        return self.root / "status.json"

    def ports_file(self, service: str) -> Path:
        return self.run / f"{service}.ports.json"

    def create(self) -> None:
        for p in (self.root, self.config, self.spool, self.mail, self.run):
            p.mkdir(parents=True, exist_ok=True)
        os.chmod(self.config, 0o700)  # the directory holds password hashes


def write_atomic(path: Path, data: str | bytes, mode: int = 0o600) -> bool:
    """Write ``path`` by rename; returns False (and writes nothing) when the
    content is already the same, so that watchers see no change."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        if path.read_bytes() == raw:
            return False
    except OSError:
        pass
    osutil.write_atomic(path, raw, mode)
    return True


@contextmanager
def apply_lock(layout: "Layout") -> Iterator[None]:
    """Held while the configuration and ``state.json`` are rewritten: by
    ``correo apply`` and by the watcher of ``correo up``, which may both act
    on one edit at once (each reads state.json, changes it and writes it
    back; without the lock one's change is lost)."""
    layout.root.mkdir(parents=True, exist_ok=True)
    with open(layout.root / ".apply.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, doc: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")


def running_state(layout: Layout) -> dict[str, Any] | None:
    """state.json of a running ``correo up`` in this data folder, else None
    (:func:`require_running` says why)."""
    try:
        return localstate.find(layout.root)
    except localstate.NotRunning:
        return None


def require_running(layout: Layout) -> dict[str, Any]:
    """state.json of a running ``correo up`` in this data folder; else
    :class:`correo_server.localstate.NotRunning`, whose message ``correo
    status``, ``apply`` and ``queue`` all print."""
    return localstate.find(layout.root)
