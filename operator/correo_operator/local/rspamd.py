"""``correo up``'s own rspamd, when the YAML asks for a managed one.

A MailDomain with ``spec.filter.rspamd.managed: true`` gets, on Kubernetes,
an rspamd Deployment (``managedrspamd``).  Locally, when the ``rspamd``
program is installed, ``correo up`` runs it as a process beside the three
services (``supervisor.Aux``: started first, its log lines prefixed
``rspamd``, restarted if it dies), over the system's rspamd configuration
(``/etc/rspamd/rspamd.conf``, modules and scores untouched) with its own
folders under the data folder::

    DATA/rspamd/local.d/   where to listen (two loopback ports), log to the console, DNS
    DATA/rspamd/db/        rspamd's database folder: compiled rules, kept across restarts
    DATA/rspamd/run/       its pid file

The first start compiles rspamd's rules (up to a minute on a busy machine);
later starts reuse them.  With ``correo up --dns`` rspamd asks that DNS
only, and its fuzzy-hash check (whose servers it resolves with the system's
resolver) is off.

When ``rspamd`` is not installed, ``correo up`` says so once and runs the
relay without content scanning (:func:`localize`), rather than defer every
message on port 25 while waiting for a scanner that will never come.  An
rspamd given by URL is used as it is.
"""
from __future__ import annotations

import os
import shutil
import urllib.request
from pathlib import Path

from correo_server import config as cfgmod

from .. import loading, managedrspamd
from .layout import Layout, write_atomic

SYSTEM_CONFIG = Path("/etc/rspamd/rspamd.conf")
PORTS = ("rspamd", "rspamd_controller")
NOT_INSTALLED = ("correo up: the MailDomain asks for a managed rspamd (spec.filter.rspamd.managed: true), "
                 "but rspamd is not installed here, so mail on port 25 is not scanned for spam or viruses. "
                 "Install it (Debian/Ubuntu: apt-get install rspamd) and restart correo up, or give "
                 "spec.filter.rspamd.url.")


def wanted(loaded: loading.Loaded) -> bool:
    """The local relay runs the first MailDomain's filter: does it ask for a managed rspamd?"""
    domains = loaded.maildomains()
    return bool(domains) and domains[0].managed_rspamd


def program() -> str | None:
    return shutil.which("rspamd")


def available() -> bool:
    return program() is not None and SYSTEM_CONFIG.is_file()


def folder(layout: Layout) -> Path:
    return layout.root / "rspamd"


def url(ports: dict[str, int]) -> str:
    return f"http://127.0.0.1:{ports['rspamd']}"


def localize(flt: cfgmod.FilterConfig | None, *, managed: bool, ports: dict[str, int]) -> cfgmod.FilterConfig | None:
    """``relay.filter`` for this machine: a managed rspamd is the local
    process (or, when rspamd is not installed, no scanning at all)."""
    if flt is None or flt.rspamd is None or not managed:
        return flt
    if not available():
        return cfgmod.FilterConfig(sender_auth=flt.sender_auth, rspamd=None, dnsbl=flt.dnsbl)
    return cfgmod.FilterConfig(sender_auth=flt.sender_auth, dnsbl=flt.dnsbl,
                               rspamd=cfgmod.RspamdConfig(url=url(ports), timeout_seconds=flt.rspamd.timeout_seconds,
                                                          on_failure=flt.rspamd.on_failure,
                                                          virus_symbols=flt.rspamd.virus_symbols))


def write_config(layout: Layout, ports: dict[str, int], nameservers: tuple[str, ...]) -> bool:
    """The ``local.d`` files; True when any changed (rspamd must restart)."""
    root = folder(layout)
    for sub in ("local.d", "db", "run"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    files = managedrspamd.local_d(normal=f"127.0.0.1:{ports['rspamd']}",
                                  controller=f"127.0.0.1:{ports['rspamd_controller']}",
                                  nameservers=nameservers, offline=bool(nameservers))
    changed = False
    for name, text in files.items():
        changed |= write_atomic(root / "local.d" / name, text, 0o644)
    for stale in (root / "local.d").iterdir():
        if stale.name not in files:
            stale.unlink()
            changed = True
    return changed


def command(layout: Layout) -> list[str]:
    root = folder(layout)
    argv = [program() or "rspamd", "-f", "-c", str(SYSTEM_CONFIG),
            "--var", f"LOCAL_CONFDIR={root}", "--var", f"DBDIR={root / 'db'}",
            "--var", f"RUNDIR={root / 'run'}", "--var", f"LOGDIR={root}"]
    if os.geteuid() == 0:  # rspamd will not run as root without being told whom to run as
        argv += ["-u", "root", "-g", "root", "-i"]
    return argv


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as resp:
            return resp.status == 200 and b"pong" in resp.read(64)
    except OSError:
        return False
