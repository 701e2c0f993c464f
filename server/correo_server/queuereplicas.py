"""Queue replicas as the servers see them: where the replicas are, which one
this process is, and whether it is leaving.

``correo.yaml`` lists the replicas that take mail (``queue.replicas``,
:class:`~.config.QueueReplica`, by ordinal); with none listed there is one
queue at ``relay.queue``, as before.  The relay hands each message to any
ready listed replica (:mod:`.relay.queuepool`, through
:func:`lmtp_targets`); ``correo serve queue --replica N`` runs with
:func:`for_replica`.  A replica whose ordinal is past the list is
**leaving** (the StatefulSet is about to shrink, or ``correo up`` found the
spool of a replica it no longer runs): it takes no mail and hands each
message it holds, with its history, to the listed replicas
(:mod:`.queue.handover`), then reports itself drained.
"""
from __future__ import annotations

import dataclasses
import os
import re
import socket

from .config import ConfigError, Listen, ServerConfig

REPLICA_ENV = "CORREO_REPLICA"


def replicated(cfg: ServerConfig) -> bool:
    return len(cfg.queue.replicas) > 1


def _reachable(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)


def lmtp_targets(cfg: ServerConfig) -> list[Listen]:
    """The LMTP of every replica that takes mail; without replicas listed,
    the one queue at ``relay.queue``."""
    if not cfg.queue.replicas:
        return [cfg.relay.queue]
    return [Listen(_reachable(r.host), r.lmtp) for r in cfg.queue.replicas]


def http_targets(cfg: ServerConfig) -> list[str]:
    """The side port (``http://host:port``) of every listed replica."""
    return [f"http://{_reachable(r.host)}:{r.http}" for r in cfg.queue.replicas]


def leaving(cfg: ServerConfig) -> bool:
    """Is this process a replica that is not listed any more (it drains)?"""
    own = cfg.queue.replica
    return own is not None and own >= len(cfg.queue.replicas) and bool(cfg.queue.replicas)


def peers(cfg: ServerConfig) -> list[tuple[int, Listen]]:
    """(ordinal, LMTP) of the listed replicas other than this one: where a
    leaving replica hands its messages."""
    return [(i, Listen(_reachable(r.host), r.lmtp)) for i, r in enumerate(cfg.queue.replicas)
            if i != cfg.queue.replica]


def http_peers(cfg: ServerConfig) -> list[tuple[int, str]]:
    """(ordinal, side port URL) of the listed replicas other than this one."""
    return [(i, f"http://{_reachable(r.host)}:{r.http}") for i, r in enumerate(cfg.queue.replicas)
            if i != cfg.queue.replica]


def for_replica(cfg: ServerConfig, replica: int, *, spool_dir: str | None = None,
                http: Listen | None = None) -> ServerConfig:
    """The configuration replica ``replica``'s own process runs with: its
    listeners and its spool.  A replica past the list (leaving) keeps the
    side port ``http`` (or ``queue.http``) and the spool ``spool_dir`` (or
    ``queue.spoolDir``: on Kubernetes, its own volume), and takes no mail."""
    q = cfg.queue
    if replica < 0:
        raise ConfigError(f"--replica {replica}: must be 0 or more")
    if replica < len(q.replicas):
        r = q.replicas[replica]
        queue = dataclasses.replace(q, replica=replica, lmtp=Listen(r.listen, r.lmtp), http=Listen(r.listen, r.http),
                                    spool_dir=spool_dir or r.spool_dir or q.spool_dir)
    elif q.replicas:
        queue = dataclasses.replace(q, replica=replica, http=http or q.http, spool_dir=spool_dir or q.spool_dir)
    else:
        raise ConfigError(f"--replica {replica}: correo.yaml lists no queue replicas")
    return dataclasses.replace(cfg, queue=queue)


_ORDINAL = re.compile(r"-(\d+)$")


def replica_from_environment(hostname: str | None = None) -> int | None:
    """The replica of this process when none was given: ``$CORREO_REPLICA``,
    else the ordinal a StatefulSet pod's name ends with (``acme-queue-2`` → 2)."""
    value = os.environ.get(REPLICA_ENV)
    if value:
        return int(value)
    found = _ORDINAL.search(hostname if hostname is not None else socket.gethostname())
    return int(found.group(1)) if found else None
