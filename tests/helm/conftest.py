"""Fixtures for the chart tests: a real helm (see ``helm_binary``), the chart
(``chartkit``), and a set of non-default values.  Without helm the tests skip,
saying how to get it; with ``CORREO_REQUIRE_ENVTEST`` set (``.ci/run``) they
fail instead, as the tests against the real API server do."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chartkit import Helm  # noqa: E402
from helm_binary import HOW_TO_GET, find_helm  # noqa: E402


@pytest.fixture(scope="session")
def helm() -> str:
    path = find_helm()
    if path is None:
        if os.environ.get("CORREO_REQUIRE_ENVTEST", "") not in ("", "0"):
            pytest.fail(f"CORREO_REQUIRE_ENVTEST is set (as .ci/run does) but: {HOW_TO_GET}", pytrace=False)
        pytest.skip(HOW_TO_GET)
    return path


@pytest.fixture(scope="session")
def chart(helm) -> Helm:
    return Helm(helm)


@pytest.fixture(scope="session")
def custom_values(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("values") / "values.yaml"
    path.write_text(yaml.safe_dump({
        "image": {"repository": "registry.example.org/mail/correo", "tag": "1.2.3", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "registry-creds"}],
        "workloadImage": "registry.example.org/mail/correo:1.2.3-services",
        "rspamdImage": "registry.example.org/mail/rspamd:3.8-local",
        "crds": {"enabled": False},
        "watchNamespaces": ["mail-a", "mail-b"],
        "statusInterval": 10,
        "moveGraceSeconds": 600,
        "logLevel": "debug",
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
        "serviceAccount": {"create": True, "name": "correo-op", "annotations": {"example.org/role": "mail"}},
        "podAnnotations": {"example.org/scrape": "true"},
        "podLabels": {"team": "mail"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "mail", "effect": "NoSchedule"}],
        "priorityClassName": "system-cluster-critical",
        "metrics": {"port": 9090, "service": {"enabled": True},
                    "serviceMonitor": {"enabled": True, "interval": "15s", "scrapeTimeout": "5s",
                                       "labels": {"release": "prometheus"}}},
        "networkPolicy": {"enabled": True, "apiServerPorts": [6443], "apiServerCIDR": "10.0.0.1/32",
                          "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]},
    }))
    return path
