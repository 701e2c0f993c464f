#!/usr/bin/env python3
"""What the port-25 filters cost: Postfix's ``smtp-source`` into ``correo up``
with the filters off, with sender authentication (SPF, DKIM, DMARC, the
own-domain rule: the default), and with sender authentication plus a managed
rspamd; Postfix with no filters, and Postfix with rspamd as its milter, in
the same run as the yardsticks.

    python bench/filter_cost.py [--sessions 10] [--messages 1000] [--size 2048] [--runs 1]

Every message comes from ``sender@remote.test``, whose SPF and DMARC records
a loopback DNS server started here publishes (``correo up --dns``; rspamd
asks it too, so nothing leaves the machine); the checks run for real, end to
end, until every message is in the mailbox.  Printed per configuration:
accept and end-to-end rates, CPU per message of correo's processes (from
``/proc``; rspamd's whole process tree counted with correo's when it runs),
and the ratios that matter on a shared, noisy machine:

* ``x Postfix``: correo's CPU per message over Postfix's, same run;
* ``x off``: the configuration's CPU per message over correo's with the
  filters off (what the checks add).

Measured here (2 shared cores, loaded by other work; 1000 messages of 2048
bytes, 10 sessions, one run each, 2026-12-04 23:22 UTC)::

    correo off   : CPU 2.59 ms/msg, 392 msg/s; x Postfix 0.72 (CPU), 1.40 (rate)
    correo auth  : CPU 3.75 ms/msg, 292 msg/s; x Postfix 1.04 (CPU), 1.05 (rate); x off 1.45
    correo rspamd: CPU 9.50 ms/msg, 134 msg/s; x Postfix 2.63 (CPU), 0.48 (rate); x off 3.67;
                   x Postfix+rspamd 1.25 (CPU), 1.11 (rate)
                   (relay 3.06, rspamd 2.85, mailstore 1.78, queue 1.48 ms/msg)
    postfix (no filters)   : CPU 3.61 ms/msg, 279 msg/s
    postfix + rspamd milter: CPU 7.61 ms/msg, 120 msg/s (rspamd 3.46)

An earlier run the same evening (no Postfix+rspamd yet) gave x off 1.24 for
auth and 2.76 for rspamd, Postfix at 2.14 ms/msg: the absolute figures move
with the machine's load by a third, the same-run ratios less.  SPF, DKIM
and DMARC add 1.2 ms per message to correo (nearly all in the relay);
rspamd adds its own ~3 ms and ~1.5 ms more in the relay (the HTTP exchange
and the verdict's headers).  The fair yardstick for the rspamd
configuration is Postfix with rspamd as its milter (rspamd then does SPF,
DKIM and DMARC too): correo costs 1.25 times its CPU per message here.  No
Postfix with policyd-spf/OpenDMARC alone is run for the "auth" row.

Uses the helpers of ``bench/smtp_ingest.py`` (the Postfix baseline needs
Debian's ``postfix`` and root).  Not a test: nothing asserts.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import smtp_ingest as ingest  # noqa: E402

from dnslib import QTYPE, RR, TXT  # noqa: E402
from dnslib.server import BaseResolver, DNSLogger, DNSServer  # noqa: E402

ROOT = ingest.ROOT

FILTERS = {
    "off": "filter: {senderAuth: {enabled: false, protectOwnDomains: false}}",
    "auth": "filter: {}",  # the defaults: SPF, DKIM, DMARC, own-domain protection
    "rspamd": "filter: {rspamd: {managed: true}}",
}

RECORDS = {
    "remote.test.": "v=spf1 ip4:127.0.0.0/8 -all",
    "_dmarc.remote.test.": "v=DMARC1; p=reject",
    "bench.test.": "v=spf1 ip4:127.0.0.0/8 -all",
}


class Zone(BaseResolver):
    """TXT records above; NXDOMAIN for every other name (rspamd's RBLs included)."""

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).lower()
        if request.q.qtype == QTYPE.TXT and name in RECORDS:
            reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=TXT(RECORDS[name]), ttl=300))
        elif not any(name == n for n in RECORDS):
            reply.header.rcode = 3  # NXDOMAIN
        return reply


def bench_yaml(filter_line: str) -> str:
    assert "\n  relay:\n" in ingest.BENCH_YAML
    return ingest.BENCH_YAML.replace("\n  relay:\n", f"\n  {filter_line}\n  relay:\n", 1)


def run_correo(args, work: Path, config: str, dns: str) -> dict:
    yaml_dir = work / f"correo-yaml-{config}"
    yaml_dir.mkdir()
    (yaml_dir / "bench.yaml").write_text(bench_yaml(FILTERS[config]))
    data = work / f"correo-data-{config}"
    log = open(work / f"correo-{config}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "correo_operator.cli", "up", str(yaml_dir), "--data", str(data),
                             "--ephemeral-ports", "--dns", dns, "--log-format", "json"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
    try:
        def state():
            try:
                s = json.loads((data / "state.json").read_text())
                return s if {"relay", "queue", "mailstore"} <= set(s.get("services", {})) else None
            except (OSError, ValueError):
                return None
        st = ingest.wait(state, 300, f"correo up ({config})")  # a first rspamd start compiles its rules
        status_url = st["endpoints"]["mailstore"]["http"] + "/status"

        def stored() -> int:
            try:
                with urllib.request.urlopen(status_url, timeout=5) as r:
                    doc = json.loads(r.read())
                return doc["mailboxes"]["user@bench.test"]["messages"]
            except (OSError, KeyError, ValueError):
                return 0

        pids = ingest.correo_processes(proc.pid)
        rspamd = st["services"].get("rspamd")
        busy0 = ingest.machine_busy_seconds()
        cpu0 = {name: ingest.process_cpu_seconds(pid) for name, pid in pids.items()}
        rspamd0 = sum(v for k, v in ingest.tree_cpu(rspamd).items() if k != " system") if rspamd else 0.0
        start = time.monotonic()
        accept, _ = ingest.smtp_source(st["ports"]["smtp"], args)
        ingest.wait(lambda: stored() >= args.messages, 600, f"correo ({config}) to store every message", 0.1)
        total = time.monotonic() - start
        busy = ingest.machine_busy_seconds() - busy0
        cpu = {name: ingest.process_cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
        if rspamd:
            cpu["rspamd"] = sum(v for k, v in ingest.tree_cpu(rspamd).items() if k != " system") - rspamd0
        refused = stored() - args.messages
        return {"accept_seconds": accept, "total_seconds": total, "machine_cpu": busy, "cpu": cpu,
                "extra_stored": refused}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def workdir(args, prefix: str):
    path = Path(tempfile.mkdtemp(dir=args.dir, prefix=prefix))
    try:
        yield path
    finally:
        if args.keep:
            print(f"kept {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def start_rspamd(work: Path, dns: str) -> tuple[subprocess.Popen, int]:
    """An rspamd for Postfix: its proxy worker as a milter (scanning itself),
    over the system's configuration, asking the loopback DNS only; the same
    ``local.d`` correo up writes for its own, but for the milter."""
    from correo_operator import managedrspamd
    from correo_operator.local import rspamd as localrspamd

    root = work / "rspamd-postfix"
    for sub in ("local.d", "db", "run"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    normal, controller, milter = ingest.free_port(), ingest.free_port(), ingest.free_port()
    files = managedrspamd.local_d(normal=f"127.0.0.1:{normal}", controller=f"127.0.0.1:{controller}",
                                  nameservers=(dns,), offline=True)
    files["worker-proxy.inc"] = (f'bind_socket = "127.0.0.1:{milter}";\nmilter = yes;\ntimeout = 120s;\n'
                                 'upstream "local" {\n  default = yes;\n  self_scan = yes;\n}\n')
    for name, text in files.items():
        (root / "local.d" / name).write_text(text)
    argv = [shutil.which("rspamd") or "rspamd", "-f", "-c", str(localrspamd.SYSTEM_CONFIG),
            "--var", f"LOCAL_CONFDIR={root}", "--var", f"DBDIR={root / 'db'}", "--var", f"RUNDIR={root / 'run'}",
            "--var", f"LOGDIR={root}"]
    if os.geteuid() == 0:
        argv += ["-u", "root", "-g", "root", "-i"]
    proc = subprocess.Popen(argv, stdout=open(work / "rspamd-postfix.log", "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    ingest.wait(lambda: localrspamd.ready(normal), 300, "rspamd for Postfix")
    return proc, milter


def run_postfix_rspamd(args, work: Path, dns: str) -> dict | None:
    proc, milter = start_rspamd(work, dns)
    try:
        rspamd0 = sum(v for k, v in ingest.tree_cpu(proc.pid).items() if k != " system")
        res = ingest.run_postfix(args, work, main_cf_extra=(
            f"smtpd_milters = inet:127.0.0.1:{milter}\nnon_smtpd_milters = \nmilter_protocol = 6\n"
            "milter_default_action = tempfail\nmilter_mail_macros = i {mail_addr} {client_addr} {client_name} "
            "{auth_authen}\n"))
        if res is not None:
            res["cpu"]["rspamd"] = sum(v for k, v in ingest.tree_cpu(proc.pid).items() if k != " system") - rspamd0
        return res
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def per_message_ms(result: dict, n: int) -> float:
    return sum(result["cpu"].values()) / n * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=10, help="parallel SMTP sessions (smtp-source -s)")
    parser.add_argument("--messages", type=int, default=1000, help="messages per configuration (smtp-source -m)")
    parser.add_argument("--size", type=int, default=2048, help="message size in bytes (smtp-source -l)")
    parser.add_argument("--runs", type=int, default=1, help="rounds of every configuration (the summary: median)")
    parser.add_argument("--configs", default="off,auth,rspamd", help="which correo configurations, in order")
    parser.add_argument("--dir", default="/var/tmp", help="where the spools and mailboxes go")
    parser.add_argument("--keep", action="store_true", help="keep the work folders (logs)")
    args = parser.parse_args()
    if not (shutil.which("smtp-source")):
        raise SystemExit("needs Postfix's smtp-source (Debian: apt-get install postfix)")
    configs = [c for c in args.configs.split(",") if c]
    if "rspamd" in configs and not shutil.which("rspamd"):
        print("rspamd is not installed: the rspamd configuration is left out", file=sys.stderr)
        configs.remove("rspamd")
    zone_server = DNSServer(Zone(), port=0, address="127.0.0.1", tcp=False,
                            logger=DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False))
    zone_server.start_thread()
    dns = f"127.0.0.1:{zone_server.server.server_address[1]}"
    n = args.messages
    results: dict[str, list[dict]] = {c: [] for c in [*configs, "postfix", "postfix+rspamd"]}
    try:
        for r in range(args.runs):
            for config in configs:
                with workdir(args, "correo-filter-bench-") as tmp:
                    res = run_correo(args, tmp, config, dns)
                    results[config].append(res)
                    print(f"run {r + 1} correo {config:6}: {n / res['accept_seconds']:5.0f} msg/s accepted, "
                          f"{n / res['total_seconds']:5.0f} msg/s end to end; CPU ms/msg "
                          f"{per_message_ms(res, n):.2f} (" + ", ".join(
                              f"{k} {v / n * 1000:.2f}" for k, v in sorted(res["cpu"].items(), key=lambda kv: -kv[1]))
                          + ")", flush=True)
            with workdir(args, "postfix-filter-bench-") as tmp:
                res = ingest.run_postfix(args, tmp)
                if res is not None:
                    res["cpu"].pop(" system", None)
                    results["postfix"].append(res)
                    print(f"run {r + 1} postfix       : {n / res['accept_seconds']:5.0f} msg/s accepted, "
                          f"{n / res['total_seconds']:5.0f} msg/s end to end; CPU ms/msg {per_message_ms(res, n):.2f}",
                          flush=True)
            if "rspamd" in configs:
                with workdir(args, "postfix-rspamd-filter-bench-") as tmp:
                    res = run_postfix_rspamd(args, tmp, dns)
                    if res is not None:
                        res["cpu"].pop(" system", None)
                        results["postfix+rspamd"].append(res)
                        print(f"run {r + 1} postfix+rspamd: {n / res['accept_seconds']:5.0f} msg/s accepted, "
                              f"{n / res['total_seconds']:5.0f} msg/s end to end; CPU ms/msg "
                              f"{per_message_ms(res, n):.2f} (rspamd {res['cpu']['rspamd'] / n * 1000:.2f})",
                              flush=True)
    finally:
        zone_server.stop()
    median = {k: statistics.median(per_message_ms(x, n) for x in v) for k, v in results.items() if v}
    rate = {k: statistics.median(n / x["total_seconds"] for x in v) for k, v in results.items() if v}
    print(f"\nsummary, median of {args.runs} run(s), {n} messages of {args.size} bytes, {args.sessions} sessions:")
    for config in configs:
        text = f"  correo {config:6}: CPU {median[config]:6.2f} ms/msg, {rate[config]:5.0f} msg/s end to end"
        if "postfix" in median:
            text += f"; x Postfix {median[config] / median['postfix']:5.2f} (CPU), " \
                    f"{rate[config] / rate['postfix']:4.2f} (rate)"
        if "off" in median and config != "off":
            text += f"; x off {median[config] / median['off']:4.2f} (CPU)"
        if config == "rspamd" and "postfix+rspamd" in median:
            text += f"; x Postfix+rspamd {median[config] / median['postfix+rspamd']:5.2f} (CPU), " \
                    f"{rate[config] / rate['postfix+rspamd']:4.2f} (rate)"
        print(text)
    if "postfix" in median:
        print(f"  postfix (no filters): CPU {median['postfix']:6.2f} ms/msg, {rate['postfix']:5.0f} msg/s end to end")
    if "postfix+rspamd" in median:
        print(f"  postfix + rspamd milter (rspamd does SPF, DKIM, DMARC and the scan): CPU "
              f"{median['postfix+rspamd']:6.2f} ms/msg, {rate['postfix+rspamd']:5.0f} msg/s end to end")


if __name__ == "__main__":
    main()
