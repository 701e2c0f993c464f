"""A real Prometheus (Debian's ``prometheus``) scrapes a running ``correo up``
after real traffic (a delivery, a deferral and a bounce through loopback MX
hosts, a refused recipient, IMAP and POP3 sessions), with the chart's alert
rules loaded: every expression of the dashboard and of the rules runs, the
dashboard's panels have data, the rules evaluate without error and none
fires on a healthy stack, and docs/metrics.md lists exactly what the
services and the operator expose.

The scrape targets get the labels the chart's PodMonitor gives them (job,
component, maildomain, namespace, pod), so the expressions run as they do
on a cluster.
"""
from __future__ import annotations

import imaplib
import json
import poplib
import re
import smtplib
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from e2e.conftest import free_port, start_stack

from .conftest import ROOT, dashboard_targets, prometheus_tool, rule_exprs
from .test_chart_monitoring import documented_metrics, referenced_metrics

pytestmark = pytest.mark.e2e

ALICE = ("alice@example.com", "wonderland")
BOB = ("bob@example.com", "canwefixit")
NAMESPACE, MAILDOMAIN = "default", "example-com"
# Panels whose queries may rightly have no data on a healthy stack: nothing
# was refused for being over the connection limits or at the queue's door.
MAY_BE_EMPTY = {
    "Refusals by reason": {"connection: {{reason}}", "queue: {{reason}}"},
}


def tls_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# -- the world around the stack: DNS and two remote MX hosts -----------------

@pytest.fixture(scope="module")
def remote_mx():
    """A loopback SMTP server for the remote domains: greylist.test is
    deferred (451), bounce.test refused (550) at RCPT."""
    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            if address.endswith("@bounce.test"):
                return "550 5.1.1 No such user here"
            return "451 4.7.1 Greylisted, try again later"

    controller = Controller(Handler(), hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller.port
    controller.stop()


@pytest.fixture(scope="module")
def dns():
    from dnslib import MX, QTYPE, RR, A
    from dnslib.server import BaseResolver, DNSServer

    records = {"greylist.test": ("MX", "mx.remote.test"), "bounce.test": ("MX", "mx.remote.test"),
               "mx.remote.test": ("A", "127.0.0.1")}

    class Resolver(BaseResolver):
        def resolve(self, request, handler):
            reply = request.reply()
            name = str(request.q.qname).rstrip(".").lower()
            found = records.get(name)
            if found is None:
                reply.header.rcode = 3
            elif found[0] == QTYPE[request.q.qtype]:
                rdata = MX(found[1], 10) if found[0] == "MX" else A(found[1])
                reply.add_answer(RR(request.q.qname, getattr(QTYPE, found[0]), rdata=rdata, ttl=60))
            return reply

    server = DNSServer(Resolver(), port=0, address="127.0.0.1", tcp=False)
    server.start_thread()
    yield f"127.0.0.1:{server.server.server_address[1]}"
    server.stop()


# -- correo up with traffic ------------------------------------------------------

def make_traffic(stack) -> None:
    with smtplib.SMTP("127.0.0.1", stack.port("submission"), timeout=30) as smtp:
        smtp.starttls(context=tls_context())
        smtp.login(*ALICE)
        smtp.sendmail(ALICE[0], [BOB[0], "friend@greylist.test", "nobody@bounce.test"],
                      b"Subject: metrics\r\n\r\nfor the dashboard\r\n")
    with smtplib.SMTP("127.0.0.1", stack.port("smtp"), timeout=30) as smtp:
        smtp.ehlo("remote.test")
        smtp.mail("someone@remote.test")
        code, _ = smtp.rcpt("nobody@example.com")
        assert code == 550
    with pytest.raises(imaplib.IMAP4.error):
        imaplib.IMAP4("127.0.0.1", stack.port("imap"), timeout=30).login(BOB[0], "wrong password")

    def bob_has_it():
        imap = imaplib.IMAP4("127.0.0.1", stack.port("imap"), timeout=30)
        try:
            imap.starttls(ssl_context=tls_context())
            imap.login(*BOB)
            imap.select("INBOX", readonly=True)
            _, found = imap.uid("SEARCH", None, "SUBJECT", "metrics")
            if found[0]:
                imap.uid("FETCH", found[0].split()[0], "(BODY.PEEK[])")
            return bool(found[0])
        finally:
            imap.logout()
    stack.wait_for(bob_has_it, timeout=60, what="the message in bob's INBOX")
    pop = poplib.POP3("127.0.0.1", stack.port("pop3"), timeout=30)
    pop.stls(context=tls_context())
    pop.user(BOB[0])
    pop.pass_(BOB[1])
    assert pop.stat()[0] >= 1
    pop.quit()

    def queue_figures():
        doc = json.loads(urllib.request.urlopen(stack.state["endpoints"]["queue"]["http"] + "/status",
                                                timeout=10).read())
        t = doc["totals"]
        return t if t["delivered"] >= 1 and t["bounced"] >= 1 and t["deferred"] >= 1 else None
    stack.wait_for(queue_figures, timeout=60, what="a delivery, a bounce and a deferral in the queue")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, dns, remote_mx):
    base = tmp_path_factory.mktemp("monitoring")
    yaml_dir = base / "yaml"
    yaml_dir.mkdir()
    for f in (ROOT / "examples" / "quickstart").iterdir():
        (yaml_dir / f.name).write_text(f.read_text())
    s = start_stack(base / "data", [yaml_dir], "--dns", dns, "--remote-smtp-port", str(remote_mx))
    try:
        make_traffic(s)
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def operator_endpoint():
    """The operator's real exposition (OpMetrics) after a few passes, one
    failed, served on a loopback port."""
    from correo_operator.opmetrics import OpMetrics

    metrics = OpMetrics()
    metrics.reconciled("create", ok=True, seconds=0.2)
    metrics.reconciled("timer", ok=False, seconds=0.1)
    metrics.api_request("patch", "maildomains/status")
    metrics.status_read("queue", ok=True)
    metrics.status_patched()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = metrics.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# -- Prometheus ------------------------------------------------------------------

class Prometheus:
    def __init__(self, url: str, targets: dict[str, str]) -> None:
        self.url = url
        self.targets = targets  # job -> host:port

    def api(self, path: str, **params) -> dict:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as rsp:
            doc = json.loads(rsp.read())
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str) -> list:
        data = self.api("query", query=expr)
        assert data["resultType"] in ("vector", "scalar", "matrix"), data
        return data["result"] if data["resultType"] != "scalar" else [data["result"]]

    def exposition(self, job: str) -> str:
        with urllib.request.urlopen(f"http://{self.targets[job]}/metrics", timeout=10) as rsp:
            return rsp.read().decode()


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except (OSError, AssertionError, ValueError) as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory, stack, operator_endpoint, rules):
    binary = prometheus_tool("prometheus")
    base = tmp_path_factory.mktemp("prometheus")
    (base / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    endpoints = stack.state["endpoints"]
    targets = {f"correo-{c}": endpoints[c]["http"].removeprefix("http://") for c in ("relay", "queue", "mailstore", "autoconfig")}
    scrape = [{"job_name": job, "static_configs": [{"targets": [addr], "labels": {
        "component": job.removeprefix("correo-"), "maildomain": MAILDOMAIN, "namespace": NAMESPACE,
        "pod": f"{MAILDOMAIN}-{job.removeprefix('correo-')}-0"}}]} for job, addr in targets.items()]
    targets["correo-operator"] = operator_endpoint
    scrape.append({"job_name": "correo-operator", "static_configs": [{"targets": [operator_endpoint], "labels": {
        "namespace": "correo-system", "pod": "correo-operator-0"}}]})
    config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(base / "rules.yaml")], "scrape_configs": scrape}
    (base / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    log = open(base / "prometheus.log", "wb")
    proc = subprocess.Popen([binary, f"--config.file={base / 'prometheus.yml'}",
                             f"--storage.tsdb.path={base / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                             "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)
    prom = Prometheus(f"http://127.0.0.1:{port}", targets)
    try:
        def ready():
            if proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(base / 'prometheus.log').read_text()[-3000:]}")
            with urllib.request.urlopen(prom.url + "/-/ready", timeout=5) as rsp:
                return rsp.status == 200
        wait_for(ready, 60, "Prometheus to be ready")
        # Enough scrapes of every target for rates over a few seconds.
        wait_for(lambda: len(prom.query('count_over_time(up{job=~"correo-.*"}[1m]) >= 5')) == len(targets), 90,
                 "five scrapes of every target")
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def grafana_to_promql(expr: str) -> str:
    """Grafana's variables as a user who picked "All" would send them."""
    return (expr.replace("$__rate_interval", "1m").replace('=~"$namespace"', '=~".*"')
            .replace('=~"$maildomain"', '=~".*"'))


def exposed_families(prom: Prometheus) -> dict[str, tuple[str, set[str]]]:
    """correo_* families the targets expose: name (with ``_total`` for counters) -> (type, sample labels)."""
    out: dict[str, tuple[str, set[str]]] = {}
    for job in prom.targets:
        for family in text_string_to_metric_families(prom.exposition(job)):
            if not family.name.startswith("correo_"):
                continue
            name = family.name + ("_total" if family.type == "counter" else "")
            labels = {k for s in family.samples for k in s.labels if k not in ("le", "quantile")}
            kind, known = out.get(name, (family.type, set()))
            assert kind == family.type, name
            out[name] = (kind, known | labels)
    return out


# -- the tests -------------------------------------------------------------------

def test_prometheus_scrapes_every_service_and_the_operator(prometheus):
    active = prometheus.api("targets")["activeTargets"]
    assert {t["labels"]["job"]: t["health"] for t in active} == {
        "correo-relay": "up", "correo-queue": "up", "correo-mailstore": "up", "correo-autoconfig": "up",
        "correo-operator": "up"}


def test_every_dashboard_query_runs_against_the_stack_and_has_data(prometheus, dashboard):
    exposed = set(exposed_families(prometheus))
    empty = []
    for title, expr in dashboard_targets(dashboard):
        missing = referenced_metrics(expr) - exposed
        assert not missing, f"{title}: {expr} uses metrics no target exposes: {missing}"
        result = prometheus.query(grafana_to_promql(expr))
        if not result:
            empty.append((title, expr))
    legends = {(p["title"], t["expr"]): t["legendFormat"] for p in dashboard["panels"] for t in p.get("targets", [])}
    unexpected = [(t, e) for t, e in empty if legends[(t, e)] not in MAY_BE_EMPTY.get(t, set())]
    assert not unexpected, f"dashboard queries without data: {unexpected}"


def test_the_dashboard_shows_what_happened_to_the_mail(prometheus):
    def by(expr, label):
        return {r["metric"].get(label): float(r["value"][1]) for r in prometheus.query(expr)}
    attempts = 'sum by (result) (correo_queue_attempts_total{namespace=~".*"})'
    assert {"delivered", "deferred", "bounced"} <= set(by(attempts, "result"))
    depth = by('sum by (state) (correo_queue_recipients)', "state")
    assert depth["deferred"] >= 1
    assert by('sum by (protocol) (correo_mailstore_sessions_total)', "protocol").keys() >= {"imap", "pop3"}
    assert by('sum by (result) (correo_mailstore_logins_total{protocol="imap"})', "result").keys() >= {"ok", "failed"}
    days = by('min by (component) (correo_tls_certificate_expiry_timestamp_seconds - time()) / 86400', "component")
    assert set(days) == {"relay", "mailstore"} and all(d > 1 for d in days.values())
    free = by('correo_volume_available_bytes / correo_volume_size_bytes', "volume")
    assert set(free) == {"spool", "mail"} and all(0 < f <= 1 for f in free.values())
    warn = by('correo_queue_warn_after_seconds', "domain")
    assert warn == {"example.com": 14400.0}


def test_the_dashboard_variables_find_the_stack(prometheus, dashboard):
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["definition"])
        assert m, variable["definition"]
        series, label = grafana_to_promql(m.group(1)), m.group(2)
        values = prometheus.api(f"label/{label}/values", **{"match[]": series})
        assert values == [{"namespace": NAMESPACE, "maildomain": MAILDOMAIN}[label]]


def test_every_alert_rule_evaluates_and_none_fires_on_a_healthy_stack(prometheus, rules):
    exposed = set(exposed_families(prometheus))
    for name, expr in rule_exprs(rules):
        assert referenced_metrics(expr) <= exposed, (name, referenced_metrics(expr) - exposed)
        prometheus.query(expr)  # a valid result, empty or not

    def evaluated():
        groups = prometheus.api("rules")["groups"]
        loaded = [r for g in groups for r in g["rules"]]
        return loaded if loaded and all(r.get("lastEvaluation", "").startswith("20") and
                                        not r["lastEvaluation"].startswith("0001") for r in loaded) else None
    loaded = wait_for(evaluated, 30, "every rule to be evaluated")
    assert {r["name"] for r in loaded} == {name for name, _ in rule_exprs(rules)}
    for rule in loaded:
        assert rule["health"] == "ok" and not rule.get("lastError"), rule
        assert rule["state"] == "inactive", (rule["name"], rule.get("alerts"))


def test_docs_metrics_table_lists_exactly_what_is_exposed(prometheus):
    exposed = exposed_families(prometheus)
    documented = documented_metrics()
    assert set(exposed) == set(documented), (
        f"exposed, not documented: {set(exposed) - set(documented)}; "
        f"documented, not exposed: {set(documented) - set(exposed)}")
    for name, (kind, labels) in exposed.items():
        doc_kind, doc_labels = documented[name]
        assert kind == doc_kind, name
        assert labels <= doc_labels, (name, labels - doc_labels)
