"""``correo up`` with fewer queue replicas than before (started so, or
``replicas`` lowered while it runs: ``up.rescale_queues`` stops the ones
that go): the spools of the replicas it no longer runs are drained into the
ones it runs.

The same drain as a leaving pod's on Kubernetes (``correo_server.queue.handover``):
a queue service on the leftover spool (``DATA/queue-<n>``), past the list
of replicas, takes no mail and hands every message, with its history, to
the running replicas; once its spool is empty the folder goes.  It runs in
the background of ``correo up`` once the services are up (mail keeps
flowing meanwhile); stopped half-way, it goes on at the next start.
"""
from __future__ import annotations

import asyncio
import dataclasses
import shutil

from correo_server import config as cfgmod
from correo_server import logs, queuereplicas
from correo_server.queue.service import QueueService

from . import stack
from .layout import Layout

log = logs.get("correo.up")


def leftovers(layout: Layout, queues: int) -> dict[int, object]:
    """Spools of replicas past ``queues`` (replica 0's always stays)."""
    return {i: p for i, p in layout.replica_spools().items() if i >= max(queues, 1)}


def drain_config(cfg: cfgmod.ServerConfig, layout: Layout, ports: dict[str, int], replica: int,
                 spool: str) -> cfgmod.ServerConfig:
    """The configuration of leftover replica ``replica``: the running
    replicas listed (one queue: that one), its own spool, a side port of its
    own chosen by the system."""
    replicas = cfg.queue.replicas or (cfgmod.QueueReplica(
        host="127.0.0.1", listen="127.0.0.1", lmtp=stack.queue_port(ports, 0, "lmtp"),
        http=stack.queue_port(ports, 0, "http"), spool_dir=str(layout.spool)),)
    cfg = dataclasses.replace(cfg, queue=dataclasses.replace(cfg.queue, replicas=replicas))
    return queuereplicas.for_replica(cfg, replica, spool_dir=spool, http=cfgmod.Listen("127.0.0.1", 0))


async def drain_leftovers(layout: Layout, ports: dict[str, int], queues: int) -> int:
    """Drain every leftover spool, one after the other; returns how many
    messages were handed over."""
    handed = 0
    for replica, path in leftovers(layout, queues).items():
        cfg = cfgmod.load(layout.config)
        own = drain_config(cfg, layout, ports, replica, str(path))
        service = QueueService(own, str(layout.config))
        await service.start()
        try:
            log.info("queue_replica_draining", replica=replica, spool=str(path), messages=len(service.state),
                     into=len(own.queue.replicas))
            assert service.drainer is not None
            await service.drainer.done.wait()
            handed += service.drainer.handed
        finally:
            await service.stop()
        if service.state is not None and len(service.state) == 0:
            shutil.rmtree(path, ignore_errors=True)
            log.info("queue_replica_drained", replica=replica, handed_over=service.drainer.handed)
    return handed
