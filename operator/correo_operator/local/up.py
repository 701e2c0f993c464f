"""``correo up`` and ``correo apply``: the whole stack from the same YAML on
this machine.

``up`` loads and validates the resources, writes the configuration folder
(``stack``), starts relay, queue and mailstore (``supervisor``; first a
managed rspamd when the YAML asks for one, ``rspamd``), prints the
endpoints and a "try it", then watches the YAML: a change to Mailboxes
rewrites the directory, which the servers reload without restarting; a change
to a MailDomain restarts the services one at a time with the relay kept up
(``Supervisor.roll``: no connection refused, no message turned away).
``apply`` does the same rewrite from
another terminal.  With mailstore shards it also moves mailboxes whose
``spec.shard`` changed (``mover``: the operator's move code, run locally).  Ctrl-C or SIGTERM stops everything cleanly.
"""
from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import shutil
import signal
import sys
from pathlib import Path

from correo_server import directory as dirmod
from correo_server import logs, passwords
from correo_server.guard import is_loopback
from correo_server.localstate import NotRunning

from .. import loading, secretdata
from correo_server import config as cfgmod

from . import rspamd as localrspamd
from . import stack
from .mover import LocalMover
from .layout import Layout, apply_lock, read_json, require_running, running_state, write_json
from . import queuedrain
from .supervisor import Aux, Supervisor, services

log = logs.get("correo.up")


DEFAULT_DATA = ".correo"


class NotStarted(Exception):
    """``correo up`` stopped before the services ran (no mail was accepted)."""


def lock_data(layout: Layout):
    """Hold an exclusive lock on the data folder for as long as this process
    lives (the kernel drops it when we die, however we die).  None when
    another ``correo up`` holds it."""
    fh = open(layout.root / "up.lock", "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    return fh


def default_paths(paths: list[str]) -> list[str]:
    if paths:
        return paths
    if Path("examples/quickstart").is_dir():
        return ["examples/quickstart"]
    return ["."]


# What an invalid YAML leaves as it was, by who loads it.
UNCHANGED = {
    "up": "nothing was started and no data folder was written",
    "apply": "the running stack keeps its configuration",
    "watch": "the running stack keeps its configuration until the YAML is valid",
}


def _load(paths: list[str], out=None, *, command: str = "watch") -> loading.Loaded | None:
    """The resources under ``paths``, or None after printing every problem,
    what to fix, and that nothing changed (``UNCHANGED[command]``)."""
    out = out or sys.stderr
    loaded = loading.load_paths(paths)
    for problem in loaded.problems:
        print(str(problem), file=out)
    prefix = "correo" if command == "watch" else f"correo {command}"
    if loaded.errors:
        print(f"{prefix}: {loading.error_summary(loaded)}, each above with its file, line and field; "
              f"fix them and run `correo {'up' if command == 'up' else 'apply'}` again "
              f"({UNCHANGED[command]}; `correo validate {' '.join(paths)}` checks without running)", file=out)
        return None
    if not loaded.domains:
        print(f"{prefix}: no MailDomain found in {', '.join(paths)} (kind: MailDomain, apiVersion: "
              f"correo.dev/v1alpha1; see examples/quickstart); {UNCHANGED[command]}", file=out)
        return None
    return loaded


def _spec_hash(doc: loading.Document) -> str:
    return hashlib.sha256(json.dumps(doc.obj.get("spec"), sort_keys=True).encode()).hexdigest()[:16]


def generations(loaded: loading.Loaded, previous: dict[str, dict] | None) -> dict[str, dict]:
    """metadata.generation as an API server keeps it: +1 when the spec changes."""
    out = {}
    for doc in loaded.domains + loaded.mailboxes:
        key = f"{doc.kind}/{doc.namespace}/{doc.name}"
        old = (previous or {}).get(key)
        h = _spec_hash(doc)
        gen = 1 if old is None else old["generation"] + (old["specHash"] != h)
        out[key] = {"generation": gen, "specHash": h}
    return out


def endpoints(host: str, ports: dict[str, int], shards: int = 1, queues: int = 1) -> dict:
    loop = "127.0.0.1"
    out = {
        **{name: f"{host}:{ports[name]}" for name in stack.PUBLIC if name != "autoconfig"},
        "relay": {"http": f"http://{loop}:{ports['relay_http']}"},
        "queue": {"http": f"http://{loop}:{ports['queue_http']}", "lmtp": f"{loop}:{ports['queue_lmtp']}"},
        "mailstore": {"http": f"http://{loop}:{ports['mailstore_http']}", "lmtp": f"{loop}:{ports['mailstore_lmtp']}"},
        "autoconfig": {"http": f"http://{loop}:{ports['autoconfig_http']}",
                       "public": f"http://{host}:{ports['autoconfig']}/"},
    }
    if queues > 1:  # the queue replicas ("queue" stays: replica 0, where the mailstore sends)
        out["queue"]["replicas"] = [f"http://{loop}:{stack.queue_port(ports, i, 'http')}" for i in range(queues)]
        for i in range(queues):
            out[f"queue-{i}"] = {"http": f"http://{loop}:{stack.queue_port(ports, i, 'http')}",
                                 "lmtp": f"{loop}:{stack.queue_port(ports, i, 'lmtp')}"}
    if shards > 1:  # the shards (the proxy has the public IMAP, POP3 and ManageSieve ports)
        del out["mailstore"]
        out["proxy"] = {"http": f"http://{loop}:{ports['proxy_http']}"}
        for i in range(shards):
            out[f"mailstore-{i}"] = {"http": f"http://{loop}:{ports[f'mailstore{i}_http']}",
                                     "lmtp": f"{loop}:{ports[f'mailstore{i}_lmtp']}",
                                     "imap": f"{loop}:{ports[f'mailstore{i}_imap']}"}
    return out


def try_it(loaded: loading.Loaded, ports: dict[str, int], host: str, cert: Path | None = None) -> list[str]:
    """Two commands that work as printed: send with swaks, read with curl.

    Off loopback a login needs TLS, so the reading line then uses IMAPS/POP3S
    and trusts the stack's certificate (``cert``)."""
    people = []
    for d in loaded.maildomains():
        secrets = loaded.secrets_in(d.namespace)
        for m in loaded.mailboxes_of(d):
            ref = m.spec.password_secret_ref
            secret = secrets.get(ref.name)
            pw = secretdata.secret_value(secret, ref.key) if secret else None
            if pw and not passwords.is_hash(pw) and not m.spec.suspended:
                people.append((m.spec.address, pw))
        if len(people) >= 2:
            break
    if len(people) < 2:
        return []
    (frm, frm_pw), (to, to_pw) = people[0], people[1]
    plain = is_loopback(host) or cert is None
    scheme, port = (("imap", ports["imap"]) if plain else ("imaps", ports["imaps"])) if _enabled(loaded, "imap") \
        else (("pop3", ports["pop3"]) if plain else ("pop3s", ports["pop3s"]))
    path = "INBOX;MAILINDEX=1" if scheme.startswith("imap") else "1"
    trust = "" if plain else f" --cacert {cert}"
    return [
        f"swaks --server {host}:{ports['submission']} -tls --auth-user {frm} --auth-password '{frm_pw}' "
        f"--from {frm} --to {to}",
        f"curl -s{trust} --user '{to}:{to_pw}' '{scheme}://{host}:{port}/{path}'",
    ]


def _enabled(loaded: loading.Loaded, protocol: str) -> bool:
    return any(getattr(d.spec.mailstore, protocol) for d in loaded.maildomains())


def data_flag(layout: Layout) -> str:
    """`` --data DIR`` for the hints, unless DIR is the default."""
    return "" if layout.root == Layout.at(DEFAULT_DATA).root else f" --data {layout.root}"


def banner(loaded: loading.Loaded, layout: Layout, ports: dict[str, int], host: str) -> str:
    doms = ", ".join(sorted(d.spec.domain for d in loaded.maildomains()))
    lines = [
        "",
        f"correo is up for {doms} ({len(loaded.mailboxes)} mailbox(es)), data in {layout.root}",
        f"  SMTP        {host}:{ports['smtp']:<6} inbound, like port 25",
        f"  submission  {host}:{ports['submission']:<6} STARTTLS + AUTH, like port 587",
        f"  SMTPS       {host}:{ports['smtps']:<6} implicit TLS, like port 465",
        *([f"  IMAP        {host}:{ports['imap']:<6} IMAPS {host}:{ports['imaps']}"] if _enabled(loaded, "imap") else []),
        *([f"  POP3        {host}:{ports['pop3']:<6} POP3S {host}:{ports['pop3s']}"] if _enabled(loaded, "pop3") else []),
        f"  ManageSieve {host}:{ports['managesieve']:<6} Sieve scripts (sieve-connect), like port 4190",
        f"  autoconfig  http://{host}:{ports['autoconfig']}/  client autoconfiguration, MTA-STS policy "
        f"(e.g. /mail/config-v1.1.xml?emailaddress=you@{doms.split(', ')[0]})",
        "  TLS uses a self-signed certificate unless the YAML includes the TLS Secret.",
        "",
    ]
    tries = try_it(loaded, ports, host, layout.config / "tls" / "tls.crt")
    if tries:
        lines += ["Try it:", *(f"  {t}" for t in tries), ""]
    flag = data_flag(layout)
    lines += [f"See what the mail is doing: correo status{flag}  ·  the queue: correo queue list{flag}"
              "  ·  stop: Ctrl-C", ""]
    return "\n".join(lines)


async def _run(args, loaded: loading.Loaded, paths: list[str], layout: Layout, options: stack.Options) -> int:
    previous = read_json(layout.state_file) or {}
    shards = stack.shard_count(loaded)
    queues = stack.queue_count(loaded)
    ports = stack.choose_ports(options, previous.get("ports"), shards, queues)
    busy = stack.busy_public_ports(options, ports)
    if busy:
        raise NotStarted(f"port(s) {', '.join(map(str, busy))} on {options.host} are in use "
                         "(another `correo up`?). Stop it, or move the ports with --port-base 10000.")
    stack.write_config(loaded, layout, ports, options)
    state = {
        "pid": os.getpid(), "data": str(layout.root), "paths": paths,
        "host": options.host, "ports": ports, "endpoints": endpoints(options.host, ports, shards, queues),
        "shards": shards, "queues": queues,
        "generations": generations(loaded, previous.get("generations")),
        "options": {"portBase": options.port_base, "ephemeral": options.ephemeral, "dns": list(options.dns),
                    "remoteSmtpPort": options.remote_smtp_port},
    }
    sup = Supervisor(layout, ports, log_format=args.log_format, order=services(shards, queues))
    if localrspamd.wanted(loaded) and not localrspamd.available():
        print(localrspamd.NOT_INSTALLED, file=sys.stderr, flush=True)
    _sync_rspamd(sup, layout, ports)
    stop, hup = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, hup.set)  # `correo apply` changed the domain configuration
    try:
        started = await _start_unless_stopped(sup, stop)
    except RuntimeError as exc:
        await sup.stop()
        raise NotStarted(str(exc)) from None
    if not started:  # Ctrl-C or SIGTERM while starting: stop what runs, start nothing more
        print("\ncorreo: stopped while starting; stopping what had started…", file=sys.stderr, flush=True)
        await sup.stop()
        layout.state_file.unlink(missing_ok=True)
        print("correo: stopped; mail and queue are kept in " + str(layout.root), file=sys.stderr)
        return 0
    running_config = _config_digest(layout)
    state["services"] = sup.pids()
    write_json(layout.state_file, state)
    print(banner(loaded, layout, ports, options.host), flush=True)
    # Fewer queue replicas than last time: the ones that went drain into these.
    draining = (asyncio.create_task(queuedrain.drain_leftovers(layout, ports, queues), name="queue-drain")
                if queuedrain.leftovers(layout, queues) else None)

    signature = stack.file_signature(paths)
    moving = asyncio.create_task(LocalMover(layout, ports, shards).run(stop)) if shards > 1 else None
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
            current = read_json(layout.state_file) or state
            paths = current.get("paths", paths)  # `correo apply PATH` may point elsewhere
            now = stack.file_signature(paths)
            restart = hup.is_set()
            hup.clear()
            if now != signature:
                signature = now
                try:
                    restart |= await asyncio.to_thread(apply_once, paths, layout, options, ports) == "restart"
                except OSError as exc:  # e.g. a full disk: the running configuration stays; the next edit or `correo apply` tries again
                    log.error("apply_failed", error=str(exc), paths=paths)
            if restart and not stop.is_set() and _config_digest(layout) != running_config:
                log.info("domain_changed_applying", how="each service restarted in turn, the relay handed over")
                running_config = _config_digest(layout)
                if _sync_rspamd(sup, layout, ports):
                    await sup.spawn("rspamd", timeout=sup.aux["rspamd"].timeout)
                try:
                    current = read_json(layout.state_file) or state
                    ports.update(current.get("ports") or {})  # `correo apply` may have chosen ports for new replicas
                    if current.get("queues", queues) != queues:
                        queues = current["queues"]
                        await rescale_queues(sup, shards, queues)
                    await sup.roll()
                except RuntimeError as exc:  # the service that failed is restarted by the supervisor
                    log.error("domain_change_failed", error=str(exc))
            if (draining is None or draining.done()) and queuedrain.leftovers(layout, queues) \
                    and not stop.is_set():  # fewer queue replicas now: the ones that went drain
                if draining is not None and not draining.cancelled() and draining.exception() is not None:
                    log.error("queue_drain_failed", error=repr(draining.exception()))
                draining = asyncio.create_task(queuedrain.drain_leftovers(layout, ports, queues), name="queue-drain")
            if (read_json(layout.state_file) or state).get("services") != sup.pids():
                await asyncio.to_thread(_record_pids, layout, state, sup.pids())
    finally:
        if draining is not None:
            if draining.done() and not draining.cancelled() and draining.exception() is not None:
                log.error("queue_drain_failed", error=repr(draining.exception()))
            draining.cancel()  # a drain cut short goes on at the next start
            await asyncio.gather(draining, return_exceptions=True)
        if moving is not None:  # mailbox moves: a move cut off here resumes from its records next time
            moving.cancel()
            await asyncio.gather(moving, return_exceptions=True)
        print("\ncorreo: stopping relay, queue and mailstore…", file=sys.stderr, flush=True)
        await sup.stop()
        layout.state_file.unlink(missing_ok=True)
        print("correo: stopped; mail and queue are kept in " + str(layout.root), file=sys.stderr)
    return 0


async def rescale_queues(sup: Supervisor, shards: int, queues: int) -> None:
    """Run ``queues`` queue processes: the ones that go are stopped (the
    relay hands mail to the others meanwhile; their spools are drained
    afterwards, ``queuedrain``), the new ones started; the caller then rolls
    the rest onto the new configuration (the relay learns the new list)."""
    aux = tuple(n for n in sup.order if n in sup.aux)
    wanted = (*aux, *services(shards, queues))
    going = [n for n in sup.order if n not in wanted]
    for name in reversed(going):
        child = sup.children.pop(name, None)
        if child is not None:
            await sup._stop_one(child)
    sup.order = wanted
    for name in wanted:
        if name not in sup.children or sup.children[name].process is None:
            await sup.spawn(name)
    log.info("queue_replicas_changed", replicas=queues, stopped=going)


async def _start_unless_stopped(sup: Supervisor, stop: asyncio.Event) -> bool:
    """Start the services unless ``stop`` is set first (a signal during a
    start that can take minutes: rspamd compiles its rules, a loaded machine
    is slow).  False when stopped: the start is cancelled where it was (a
    process being spawned is killed by asyncio; one waiting to be ready is
    in ``sup.children``), and the caller stops every child that runs."""
    starting = asyncio.create_task(sup.start())
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if starting.done():
        starting.result()  # a service that could not start: RuntimeError
        return not stop.is_set()
    starting.cancel()
    try:
        await starting
    except asyncio.CancelledError:
        pass
    except RuntimeError:
        pass  # it failed as it was cancelled: stopping anyway
    return False


def _record_pids(layout: Layout, state: dict, pids: dict) -> None:
    with apply_lock(layout):  # `correo apply` may be rewriting state.json
        current = read_json(layout.state_file) or state
        current["services"] = pids
        write_json(layout.state_file, current)


def _sync_rspamd(sup: Supervisor, layout: Layout, ports: dict[str, int]) -> bool:
    """Give the supervisor the local rspamd when the written configuration
    points the relay at it (True when it was not there before)."""
    try:
        flt = cfgmod.load(layout.config).relay.filter
    except cfgmod.ConfigError:
        return False
    if "rspamd" in sup.aux or flt is None or flt.rspamd is None or flt.rspamd.url != localrspamd.url(ports):
        return False
    port = ports["rspamd"]
    sup.add_aux("rspamd", Aux(localrspamd.command(layout), lambda: localrspamd.ready(port)))
    print("correo up: starting rspamd (its first start compiles its rules: up to a minute)…",
          file=sys.stderr, flush=True)
    return True


def _config_digest(layout: Layout) -> str:
    try:
        return hashlib.sha256((layout.config / "correo.yaml").read_bytes()).hexdigest()
    except OSError:
        return ""


def apply_once(paths: list[str], layout: Layout, options: stack.Options, ports: dict[str, int],
               loaded: loading.Loaded | None = None) -> str | None:
    """Re-load the YAML and rewrite the configuration.  Returns "restart" when
    the domain configuration changed, "reloaded" when only the directory did,
    None when nothing changed or the YAML is invalid (the old config stays)."""
    loaded = loaded or _load(paths)
    if loaded is None:
        return None
    with apply_lock(layout):
        return _apply_locked(loaded, paths, layout, options, ports)


def _apply_locked(loaded: loading.Loaded, paths: list[str], layout: Layout, options: stack.Options,
                  ports: dict[str, int]) -> str | None:
    state = read_json(layout.state_file)
    running = (state or {}).get("shards", 1)
    if stack.shard_count(loaded) != running:
        print(f"correo: spec.mailstore.shards is now {stack.shard_count(loaded)}, the running stack has {running}: "
              "stop `correo up` and start it again to change the number of shards (the running stack keeps "
              "its configuration)", file=sys.stderr)
        return None
    queues = stack.queue_count(loaded)
    if state is not None and queues != state.get("queues", 1):
        # Another number of queue replicas: ports for the new ones; `correo up`
        # starts them, or stops the ones that go and drains their spools.
        ports.update(state.get("ports") or {})
        for name in stack.internal_names(running, queues):
            if name not in ports:
                ports[name] = stack.free_port("127.0.0.1")
        log.info("queue_replicas_changing", replicas=queues, before=state.get("queues", 1))
        state.update(ports=ports, queues=queues, endpoints=endpoints(state.get("host", "127.0.0.1"), ports,
                                                                     running, queues))
    before = _directory_now(layout)
    config_changed, directory_changed = stack.write_config(loaded, layout, ports, options)
    if state is not None:
        state["generations"] = generations(loaded, state.get("generations"))
        state["paths"] = [str(Path(p).resolve()) for p in paths]
        write_json(layout.state_file, state)
    if config_changed:
        return "restart"
    if directory_changed:
        after = _directory_now(layout)
        found = dirmod.changes(before, after) if before is not None and after is not None else {}
        log.info("mailboxes_applied", mailboxes=len(loaded.mailboxes), **found)
        return "reloaded"
    return None


def _directory_now(layout: Layout) -> dirmod.Directory | None:
    """The directory the services read now (None before the first start)."""
    try:
        return dirmod.load(layout.config)
    except Exception:  # noqa: BLE001 - no file yet, or one from an older correo: nothing to compare
        return None


def main(args) -> int:
    logs.setup(args.log_format)
    # Absolute from here on: state.json keeps them for `apply` and the watcher.
    paths = [str(Path(p).resolve()) for p in default_paths(args.paths)]
    loaded = _load(paths, command="up")
    if loaded is None:
        return 1
    layout = Layout.at(args.data)
    fresh = not layout.root.exists()
    layout.create()
    lock = lock_data(layout)
    if lock is None:
        holder = running_state(layout)
        print(f"correo up: a stack is already running with data in {layout.root}"
              + (f" (pid {holder['pid']})" if holder else "") + "; use `correo apply` to change it", file=sys.stderr)
        return 1
    options = stack.Options(
        host=args.host,
        port_base=0 if args.port_base is None else args.port_base,
        ephemeral=getattr(args, "ephemeral_ports", False),
        dns=tuple(args.dns) or tuple(a for a in os.environ.get("CORREO_DNS", "").split(",") if a),
        remote_smtp_port=args.remote_smtp_port,
    )
    if not shutil.which("swaks"):
        log.info("swaks_not_installed", hint="apt-get install swaks to use the try-it line")
    try:
        return asyncio.run(_run(args, loaded, paths, layout, options))
    except NotStarted as exc:
        print(f"correo up: {exc}", file=sys.stderr)
        if fresh:  # nothing ran: leave no half-made data folder behind
            shutil.rmtree(layout.root, ignore_errors=True)
        return 1
    finally:
        lock.close()


def apply(args) -> int:
    """``correo apply``: push YAML changes into a running local stack."""
    layout = Layout.at(args.data)
    try:
        state = require_running(layout)
    except NotRunning as exc:
        print(f"correo apply: {exc}", file=sys.stderr)
        return 1
    paths = [str(Path(p).resolve()) for p in args.paths] or state["paths"]
    opts = state.get("options") or {}
    options = stack.Options(host=state.get("host", "127.0.0.1"), port_base=opts.get("portBase", 0),
                            ephemeral=opts.get("ephemeral", False), dns=tuple(opts.get("dns") or ()),
                            remote_smtp_port=opts.get("remoteSmtpPort"))
    loaded = _load(paths, command="apply")
    if loaded is None:
        return 1
    if localrspamd.wanted(loaded) and not localrspamd.available():
        print(localrspamd.NOT_INSTALLED, file=sys.stderr)
    old_paths = state.get("paths")
    result = apply_once(paths, layout, options, state["ports"], loaded)
    if [str(Path(p).resolve()) for p in paths] != old_paths:
        print(f"correo apply: `correo up` now watches {', '.join(paths)} (was {', '.join(old_paths or [])})")
    if result == "restart":
        os.kill(state["pid"], signal.SIGHUP)
        print("correo apply: the domain configuration changed; `correo up` restarts the services one at a time, "
              "the relay kept up")
    elif result == "reloaded":
        print("correo apply: mailboxes updated; the services reload them without restarting")
    else:  # `correo up` watches the YAML and usually applies an edit before we get here
        print("correo apply: already applied: the running stack has this configuration")
    return 0
