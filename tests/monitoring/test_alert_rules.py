"""The chart's alert rules pass Prometheus' own checks: ``promtool check
rules`` on the rendered PrometheusRule, and ``promtool test rules`` with a
unit test for every alert (``alert_tests.yaml``: each fires with its labels
and texts where it should, and stays quiet where it should)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from .conftest import prometheus_tool

UNIT_TESTS = Path(__file__).with_name("alert_tests.yaml")


def write_rules(folder: Path, rules: dict) -> Path:
    path = folder / "rules.yaml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    shutil.copy(UNIT_TESTS, folder / UNIT_TESTS.name)
    return path


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([prometheus_tool("promtool"), *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_promtool_checks_the_rendered_rules(rules, tmp_path):
    write_rules(tmp_path, rules)
    done = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in rules['groups'])} rules found" in done.stdout


def test_every_alert_has_a_unit_test_and_they_pass(rules, tmp_path):
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tested = {case["alertname"] for t in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
              for case in t.get("alert_rule_test", []) if case.get("exp_alerts")}
    assert alerts == tested, f"alerts without a firing unit test: {alerts - tested}"
    write_rules(tmp_path, rules)
    done = promtool("test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_unit_tests_notice_a_broken_rule(rules, tmp_path):
    """A threshold gone wrong fails them: they test the rules, not themselves."""
    broken = yaml.safe_load(yaml.safe_dump(rules))
    for group in broken["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "CorreoBounceRatioHigh":
                rule["expr"] = rule["expr"].replace(") > 0.1", ") > 0.5")
    write_rules(tmp_path, broken)
    done = promtool("test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert done.returncode != 0 and "CorreoBounceRatioHigh" in done.stdout + done.stderr
