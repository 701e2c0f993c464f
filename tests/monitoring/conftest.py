"""Fixtures for the monitoring tests: the chart's monitoring objects rendered
by a real helm, the dashboard and the alert rules they ship, and the
Prometheus tools (Debian's ``prometheus`` package: ``prometheus``,
``promtool``)."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "helm"))

from chartkit import Helm  # noqa: E402
from helm_binary import HOW_TO_GET, find_helm  # noqa: E402

DASHBOARD = ROOT / "helm" / "correo" / "dashboards" / "correo.json"
ALL_ON = ("monitoring.podMonitor.enabled=true", "monitoring.dashboard.enabled=true",
          "monitoring.prometheusRule.enabled=true", "metrics.serviceMonitor.enabled=true")
PROMETHEUS_MISSING = ("Prometheus is not installed (scripts/setup-test-env installs it; "
                      "Debian: apt-get install prometheus)")


TOOLS = {"prometheus": shutil.which("prometheus"), "promtool": shutil.which("promtool")}


def prometheus_tool(name: str) -> str:
    """The path of ``prometheus`` or ``promtool``; the test is skipped, saying how to get it, without."""
    if TOOLS[name] is None:
        pytest.skip(PROMETHEUS_MISSING)
    return TOOLS[name]


@pytest.fixture(scope="session")
def chart() -> Helm:
    path = find_helm()
    if path is None:
        pytest.skip(HOW_TO_GET)
    return Helm(path)


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


@pytest.fixture(scope="session")
def monitoring_objects(chart) -> list[dict]:
    return chart.template(*ALL_ON)


@pytest.fixture(scope="session")
def rules(monitoring_objects) -> dict:
    """The rendered PrometheusRule's spec: a Prometheus rules file (``groups``)."""
    (rule,) = by_kind(monitoring_objects, "PrometheusRule")
    return rule["spec"]


@pytest.fixture(scope="session")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_targets(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL expression) of every query in the dashboard."""
    out = []
    def walk(panels):
        for panel in panels:
            for target in panel.get("targets", []):
                out.append((panel["title"], target["expr"]))
            walk(panel.get("panels", []))
    walk(dashboard["panels"])
    return out


def rule_exprs(rules: dict) -> list[tuple[str, str]]:
    return [(r.get("alert") or r.get("record"), r["expr"]) for g in rules["groups"] for r in g["rules"]]
