"""``correo serve relay|queue|mailstore|autoconfig --config DIR``: what each pod runs.

Reads the configuration folder, sets up logging, runs the service on uvloop
when it is installed (:func:`event_loop_runner`) until SIGTERM/SIGINT, then
stops it cleanly (listeners closed, in-flight work finished or left safely
on disk).
"""
from __future__ import annotations

import asyncio
import dataclasses
import gc
import importlib
import json
import os
import signal
import sys

from . import config as configmod
from . import logs, queuereplicas, shards
from .folderlock import CannotStart


SERVICES = {
    "relay": "correo_server.relay.service:RelayService",
    "queue": "correo_server.queue.service:QueueService",
    "mailstore": "correo_server.mailstore.service:MailstoreService",
    "autoconfig": "correo_server.autoconfig.service:AutoconfigService",
    "proxy": "correo_server.proxy.service:ProxyService",
}


def _service_class(name: str):
    module, _, cls = SERVICES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


async def run(name: str, config_dir: str, ports_file: str | None = None, shard: int | None = None,
              replica: int | None = None, spool: str | None = None) -> None:
    cfg = configmod.load(config_dir)
    if name == "mailstore" and shards.sharded(cfg):
        cfg = shards.for_shard(cfg, shard if shard is not None else _own_shard())
    if name == "queue":
        cfg = _queue_config(cfg, replica, spool)
    service = _service_class(name)(cfg, config_dir)
    log = logs.get("correo.serve", service=name)
    ports = await service.start()
    tune_gc()
    if ports_file:
        tmp = f"{ports_file}.tmp"
        with open(tmp, "w") as fh:
            json.dump(ports, fh)
        os.replace(tmp, ports_file)
    log.info("service_started", ports=ports, config=config_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("service_stopping")
    await service.stop()
    log.info("service_stopped")


# Python's cyclic garbage collector, for a long-running server: allocations
# between young collections (default 700: the relay made one every few
# messages), and how many of those make an older one (default 10 and 10).
GC_THRESHOLDS = (5000, 10, 10)


def tune_gc() -> None:
    """After start-up: what start-up made (modules, configuration, the
    directory; tens of thousands of objects) is moved out of the collector's
    sight (``gc.freeze``), and collections run less often, so that each
    message does not pay for scanning them again (the relay spent about 5%
    of its CPU in the collector).  Cycles are still collected."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _own_shard() -> int:
    found = shards.shard_from_environment()
    if found is None:
        raise configmod.ConfigError("correo.yaml lists mailstore shards: say which one this is with --shard N "
                                    f"(or ${shards.SHARD_ENV})")
    return found


def _queue_config(cfg: configmod.ServerConfig, replica: int | None, spool: str | None) -> configmod.ServerConfig:
    """The queue's configuration: with replicas listed, this replica's
    (``--replica``, else from the environment); ``--spool`` moves the spool."""
    if cfg.queue.replicas:
        found = replica if replica is not None else queuereplicas.replica_from_environment()
        if found is None:
            raise configmod.ConfigError("correo.yaml lists queue replicas: say which one this is with --replica N "
                                        f"(or ${queuereplicas.REPLICA_ENV})")
        return queuereplicas.for_replica(cfg, found, spool_dir=spool)
    if spool:
        return dataclasses.replace(cfg, queue=dataclasses.replace(cfg.queue, spool_dir=spool))
    return cfg


def event_loop_runner():
    """``uvloop.run`` where uvloop is installed (a faster event loop: about
    a sixth less CPU per message on the SMTP path), else ``asyncio.run``;
    ``CORREO_NO_UVLOOP=1`` asks for asyncio's own loop."""
    if not os.environ.get("CORREO_NO_UVLOOP"):
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run
    return asyncio.run


def main(args) -> int:
    try:
        cfg = configmod.load(args.config)
    except configmod.ConfigError as exc:
        print(f"correo serve {args.service}: {exc}", file=sys.stderr)
        return 2
    if args.service == "proxy" and cfg.proxy is None:
        print(f"correo serve proxy: {args.config}/correo.yaml has no proxy section (the mailstore has one shard: "
              "clients talk to it directly)", file=sys.stderr)
        return 2
    shard = getattr(args, "shard", None)
    if args.service == "mailstore" and shards.sharded(cfg):
        try:
            shards.for_shard(cfg, shard if shard is not None else _own_shard())
        except configmod.ConfigError as exc:
            print(f"correo serve mailstore: {exc}", file=sys.stderr)
            return 2
    replica, spool = getattr(args, "replica", None), getattr(args, "spool", None)
    if args.service == "queue":
        try:
            _queue_config(cfg, replica, spool)
        except configmod.ConfigError as exc:
            print(f"correo serve queue: {exc}", file=sys.stderr)
            return 2
    logs.setup(args.log_format or cfg.log_format, service=args.service, cache=True)
    try:
        event_loop_runner()(run(args.service, args.config, args.ports_file, shard, replica, spool))
    except CannotStart as exc:
        print(f"correo serve {args.service}: {exc}", file=sys.stderr)
        return 1
    return 0
