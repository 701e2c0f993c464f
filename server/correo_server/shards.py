"""Mailstore shards as the servers see them: which shard owns a mailbox, where
a shard is reached, and what a shard's own process runs with.

The control plane decides placement (``correo_operator.placement``) and
records it in the directory (``MailboxEntry.shard``); ``correo.yaml`` lists
the shards (``mailstore.shards``, :class:`~.config.MailstoreShard`).  The
queue routes LMTP with :func:`lmtp_target`, the proxy (:mod:`.proxy`) finds
the IMAP/POP3/ManageSieve port of a shard with :func:`shard_address`, and
``correo serve mailstore --shard N`` runs with :func:`for_shard`.  With no
shards listed everything is as before: one mailstore at
``queue.mailstore``.
"""
from __future__ import annotations

import dataclasses
import os
import re
import socket

from .config import ConfigError, Listen, ServerConfig

SHARD_ENV = "CORREO_SHARD"


def sharded(cfg: ServerConfig) -> bool:
    return len(cfg.mailstore.shards) > 1


def lmtp_target(cfg: ServerConfig, shard: int) -> tuple[str, int]:
    """(host, port) of the LMTP of ``shard``; unsharded: ``queue.mailstore``."""
    shards = cfg.mailstore.shards
    if not shards:
        m = cfg.queue.mailstore
        return (m.host if m.host not in ("0.0.0.0", "::", "") else "127.0.0.1"), m.port
    s = shards[shard if 0 <= shard < len(shards) else 0]
    return s.host, s.lmtp


def shard_address(cfg: ServerConfig, shard: int, protocol: str) -> tuple[str, int]:
    """(host, port) of a shard's plain-text ``imap``, ``pop3`` or ``managesieve`` listener."""
    s = cfg.mailstore.shards[shard]
    return s.host, getattr(s, protocol)


def for_shard(cfg: ServerConfig, shard: int) -> ServerConfig:
    """The configuration shard ``shard``'s own process runs with: its listeners,
    its data folder, ``mailstore.shard`` set (it serves only its mailboxes,
    and no implicit-TLS ports: clients come through the proxy)."""
    shards = cfg.mailstore.shards
    if not 0 <= shard < len(shards):
        raise ConfigError(f"--shard {shard}: correo.yaml lists {len(shards)} mailstore shard(s)")
    s = shards[shard]
    m = cfg.mailstore
    mailstore = dataclasses.replace(
        m, shard=shard,
        lmtp=Listen(s.listen, s.lmtp), imap=Listen(s.listen, s.imap), pop3=Listen(s.listen, s.pop3),
        managesieve=Listen(s.listen, s.managesieve), http=Listen(s.listen, s.http), moves=Listen(s.listen, s.moves),
        data_dir=s.data_dir or m.data_dir,
        # every client of a shard is the proxy: the per-client limit is the proxy's to apply
        max_connections_per_client=m.max_connections,
    )
    return dataclasses.replace(cfg, mailstore=mailstore)


_ORDINAL = re.compile(r"-(\d+)$")


def shard_from_environment(hostname: str | None = None) -> int | None:
    """The shard of this process when none was given: ``$CORREO_SHARD``, else
    the ordinal a StatefulSet pod's name ends with (``acme-mailstore-2`` → 2)."""
    value = os.environ.get(SHARD_ENV)
    if value:
        return int(value)
    found = _ORDINAL.search(hostname if hostname is not None else socket.gethostname())
    return int(found.group(1)) if found else None


def owns(cfg: ServerConfig, entry_shard: int) -> bool:
    """Does this process hold mailboxes of ``entry_shard``?  Always, unsharded."""
    own = cfg.mailstore.shard
    return own is None or own == entry_shard
