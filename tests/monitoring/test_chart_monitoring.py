"""The chart's monitoring objects as a platform team installs them: off by
default; a PodMonitor that selects exactly the mail pods the operator
renders, on their side port; the dashboard ConfigMap Grafana's sidecar
picks up; alert thresholds that follow the values; and every metric the
dashboard and the alerts use is documented."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import yaml

from .conftest import ALL_ON, DASHBOARD, ROOT, by_kind, dashboard_targets, rule_exprs

MONITORING_KINDS = {"PodMonitor", "PrometheusRule"}


def rendered_pods() -> list[tuple[str, dict]]:
    """(component, pod template) of every workload `correo render` makes for the examples."""
    done = subprocess.run([sys.executable, "-m", "correo_operator.cli", "render", str(ROOT / "examples")],
                          capture_output=True, text=True, timeout=120, check=True)
    pods = []
    for obj in yaml.safe_load_all(done.stdout):
        if obj and obj["kind"] in ("Deployment", "StatefulSet"):
            template = obj["spec"]["template"]
            pods.append((template["metadata"]["labels"]["app.kubernetes.io/component"], template))
    return pods


def selects(selector: dict, labels: dict) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In"
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def test_monitoring_is_off_by_default(chart):
    objects = chart.template()
    assert not {o["kind"] for o in objects} & MONITORING_KINDS
    assert not [o for o in by_kind(objects, "ConfigMap") if "grafana_dashboard" in o["metadata"]["labels"]]


def test_the_pod_monitor_selects_every_mail_pod_on_its_side_port_and_nothing_else(chart, monitoring_objects):
    (monitor,) = by_kind(monitoring_objects, "PodMonitor")
    spec = monitor["spec"]
    pods = rendered_pods()
    assert {c for c, _ in pods} == {"relay", "queue", "mailstore", "autoconfig", "rspamd"}
    for component, template in pods:
        if component == "rspamd":  # a managed rspamd (spec.filter): not correo's metrics, not scraped
            assert not selects(spec["selector"], template["metadata"]["labels"])
            continue
        assert selects(spec["selector"], template["metadata"]["labels"]), component
        ports = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
        for endpoint in spec["podMetricsEndpoints"]:
            assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    (operator,) = by_kind(monitoring_objects, "Deployment")  # the chart's own pod: its ServiceMonitor's job
    assert not selects(spec["selector"], operator["spec"]["template"]["metadata"]["labels"])
    assert spec["namespaceSelector"] == {"any": True}
    relabel = {r["targetLabel"]: r for r in spec["podMetricsEndpoints"][0]["relabelings"]}
    assert relabel["job"]["replacement"] == "correo-$1"
    assert relabel["maildomain"]["sourceLabels"] == ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"]
    (service_monitor,) = by_kind(monitoring_objects, "ServiceMonitor")
    assert service_monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_the_pod_monitor_looks_only_in_the_watched_namespaces(chart):
    objects = chart.template("monitoring.podMonitor.enabled=true", "watchNamespaces={mail,lists}",
                             "monitoring.podMonitor.labels.release=kube-prometheus-stack")
    (monitor,) = by_kind(objects, "PodMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["mail", "lists"]}
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_the_dashboard_configmap_carries_the_sidecar_label_and_the_dashboard(chart):
    objects = chart.template("monitoring.dashboard.enabled=true", "monitoring.dashboard.namespace=grafana",
                             "monitoring.dashboard.annotations.grafana_folder=Mail")
    (cm,) = [o for o in by_kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "grafana"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Mail"}
    assert json.loads(cm["data"]["correo.json"]) == json.loads(DASHBOARD.read_text())


def test_the_dashboard_is_a_grafana_dashboard_with_a_panel_for_each_concern(dashboard):
    assert dashboard["uid"] == "correo-mail" and dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    assert {"namespace", "maildomain"} <= set(variables)
    titles = [p["title"] for p in dashboard["panels"] if p["type"] != "row"]
    for wanted in ("Queue depth by state", "Queue age", "Deliveries per destination", "Deferrals per destination",
                   "Bounces per destination", "Refusals by reason", "IMAP and POP3 sessions",
                   "IMAP command latency", "Disk free", "Certificate expiry"):
        assert wanted in titles
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"] and panel["description"]
            for target in panel["targets"]:
                assert 'namespace=~"$namespace", maildomain=~"$maildomain"' in target["expr"], target["expr"]


def test_alert_thresholds_follow_the_values(chart):
    objects = chart.template("monitoring.prometheusRule.enabled=true", "monitoring.prometheusRule.bounceRatio=0.25",
                             "monitoring.prometheusRule.bounceMinimum=20",
                             "monitoring.prometheusRule.volumeFreeRatio=0.05",
                             "monitoring.prometheusRule.certificateExpiryDays=21")
    (rule,) = by_kind(objects, "PrometheusRule")
    exprs = dict(rule_exprs(rule["spec"]))
    assert ") > 0.25" in exprs["CorreoBounceRatioHigh"] and ">= 20" in exprs["CorreoBounceRatioHigh"]
    assert "< 0.05" in exprs["CorreoVolumeNearlyFull"]
    assert "< 21 * 86400" in exprs["CorreoCertificateExpiresSoon"]


def test_invalid_thresholds_are_refused_by_the_values_schema(chart):
    done = chart.run("template", "x", str(ROOT / "helm" / "correo"), "--set", "monitoring.prometheusRule.bounceRatio=2",
                     check=False)
    assert done.returncode != 0 and "bounceRatio" in done.stderr


def documented_metrics(section: str = "The metrics") -> dict[str, tuple[str, set[str]]]:
    """A table of docs/metrics.md, by its heading: metric -> (type, label names).
    "The metrics": what a one-shard stack exposes; "The proxy (sharded
    domains)": the proxy's own (``tests/scale`` holds it to what it exposes)."""
    table, current = {}, None
    for line in (ROOT / "docs" / "metrics.md").read_text().splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
        m = re.match(r"\| `(correo_[a-z0-9_]+)` \| (counter|gauge|histogram) \|([^|]*)\|", line)
        if m and current == section:
            table[m.group(1)] = (m.group(2), set(re.findall(r"`([a-z_]+)`", m.group(3))))
    return table


PROXY_SECTION = "The proxy (sharded domains)"


def referenced_metrics(expr: str) -> set[str]:
    names = set(re.findall(r"\b(correo_[a-z0-9_]+)", expr))
    return {re.sub(r"_(bucket|count|sum)$", "", n) for n in names}


def test_every_metric_the_dashboard_and_the_alerts_use_is_documented(dashboard, rules):
    documented = documented_metrics()
    assert len(documented) > 40
    used = set()
    for _, expr in dashboard_targets(dashboard) + rule_exprs(rules):
        used |= referenced_metrics(expr)
    assert used - set(documented) == set()


def test_every_documented_metric_is_declared_in_the_code():
    code = "\n".join(p.read_text() for folder in ("server", "operator") for p in (ROOT / folder).rglob("*.py"))
    for name in {**documented_metrics(), **documented_metrics(PROXY_SECTION)}:
        short = name.removeprefix("correo_operator_").removeprefix("correo_")
        assert short in code, name
