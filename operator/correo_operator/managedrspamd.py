"""The rspamd correo runs itself (``spec.filter.rspamd.managed: true``).

On Kubernetes the renderer (``render``) adds, for a MailDomain named
``<base>``, a Deployment and a Service ``<base>-rspamd`` (the normal
worker's port 11333 only), a ConfigMap ``<base>-rspamd`` with rspamd's
``local.d`` files, and a NetworkPolicy ``<base>-rspamd``: in, only the
relay's pods on 11333; out, DNS and the HTTP(S) and fuzzy-hash ports rspamd's
modules use.  The image is the chart's ``rspamd.image`` (the operator's
``--rspamd-image``); the pod runs as rspamd's own user (11333) with the
restricted pod security profile, a read-only root file system, and empty
folders for what rspamd writes (``/var/lib/rspamd``: its compiled rules;
``/run/rspamd``).  The relay asks ``http://<base>-rspamd.<ns>.svc:11333``.

Under ``correo up`` the same ``local.d`` files (:func:`local_d`), with
loopback ports and the stack's DNS, configure a local ``rspamd`` process
over the system's rspamd configuration (``correo_operator.local.rspamd``).

rspamd's own configuration (its modules, scores, maps) is the image's or the
system's, unchanged: ``local.d`` only says where to listen, where to log and
which DNS to ask.  Everything here is pure.
"""
from __future__ import annotations

import hashlib
from typing import Any

from correo_server.dnsresolver import nameserver

from .model import MailDomain

DEFAULT_IMAGE = "docker.io/rspamd/rspamd:3.8"
PORT = 11333  # the normal worker (what /checkv2 is asked on)
UID = 11333  # the rspamd image's user
COMPONENT = "rspamd"
CONFIG_DIR = "/etc/rspamd/local.d"
RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


def name(domain: MailDomain) -> str:
    return f"{domain.name}-rspamd"


def url(domain: MailDomain) -> str:
    """Where the relay asks the managed rspamd (cluster DNS)."""
    return f"http://{name(domain)}.{domain.namespace}.svc:{PORT}"


def local_d(*, normal: str, controller: str, nameservers: tuple[str, ...] = (), log_file: str | None = None,
            offline: bool = False) -> dict[str, str]:
    """rspamd's ``local.d`` files: the normal worker on ``normal``
    (``host:port``), the controller on ``controller``, the proxy off, logs
    to the console (or ``log_file``), DNS from ``nameservers`` (the
    system's when empty).  ``offline``: the fuzzy-hash check is turned off,
    whose servers rspamd resolves with the system's resolver whatever
    ``nameservers`` says (a stack given its own DNS, as tests and
    air-gapped sites are, must not ask the world)."""
    files = {
        "worker-normal.inc": f'bind_socket = "{normal}";\n',
        "worker-controller.inc": f'bind_socket = "{controller}";\n',
        "worker-proxy.inc": "count = 0;\n",
        "logging.inc": (f'type = "file";\nfilename = "{log_file}";\n' if log_file
                        else 'type = "console";\n') + 'level = "notice";\n',
    }
    if nameservers:
        servers = ", ".join(f'"{_server(ns)}"' for ns in nameservers)
        files["options.inc"] = f"dns {{\n  nameserver = [{servers}];\n  timeout = 2s;\n  retransmits = 2;\n}}\n"
    if offline:
        files["fuzzy_check.conf"] = "enabled = false;\n"
    return files


def _server(item: str) -> str:
    """``host:port`` as rspamd writes a nameserver (``[v6]:port``)."""
    ns = nameserver(item)
    return f"[{ns.address}]:{ns.port}" if ":" in ns.address else f"{ns.address}:{ns.port}"


def objects(domain: MailDomain, *, image: str, meta, labels: dict[str, str], selector: dict[str, str],
            relay_selector: dict[str, str]) -> list[dict[str, Any]]:
    """The Kubernetes objects of a managed rspamd.  ``meta(name, component)``
    makes a child's metadata (owned by the MailDomain), ``labels`` and
    ``selector`` are the rspamd pods', ``relay_selector`` the relay pods'."""
    n = name(domain)
    files = local_d(normal=f"*:{PORT}", controller="localhost:11334")
    config_hash = hashlib.sha256(repr(sorted(files.items())).encode()).hexdigest()[:16]
    container = {
        "name": "rspamd",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "rspamd", "containerPort": PORT, "protocol": "TCP"}],
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                         {"name": "db", "mountPath": "/var/lib/rspamd"},
                         {"name": "run", "mountPath": "/run/rspamd"},
                         {"name": "tmp", "mountPath": "/tmp"}],
        # rspamd compiles its rules when it starts (up to a minute on a small node).
        "startupProbe": {"httpGet": {"path": "/ping", "port": "rspamd"}, "periodSeconds": 5,
                         "timeoutSeconds": 3, "failureThreshold": 60},
        "livenessProbe": {"httpGet": {"path": "/ping", "port": "rspamd"}, "periodSeconds": 15,
                          "timeoutSeconds": 5, "failureThreshold": 4},
        "readinessProbe": {"httpGet": {"path": "/ping", "port": "rspamd"}, "periodSeconds": 5,
                           "timeoutSeconds": 3, "failureThreshold": 3},
        "resources": RESOURCES,
        "securityContext": {
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    pod = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "terminationGracePeriodSeconds": 30,
        "containers": [container],
        "volumes": [{"name": "config", "configMap": {"name": n, "defaultMode": 0o444}},
                    {"name": "db", "emptyDir": {"sizeLimit": "512Mi"}},
                    {"name": "run", "emptyDir": {"sizeLimit": "16Mi"}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
    }
    dns = {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
           "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(n, COMPONENT), "data": files},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(n, COMPONENT),
         "spec": {"replicas": 1, "revisionHistoryLimit": 3, "selector": {"matchLabels": selector},
                  "template": {"metadata": {"labels": labels,
                                            "annotations": {"correo.dev/config-hash": config_hash}},
                               "spec": pod}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta(n, COMPONENT),
         "spec": {"type": "ClusterIP", "selector": selector,
                  "ports": [{"name": "rspamd", "port": PORT, "targetPort": PORT, "protocol": "TCP"}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta(n, COMPONENT),
         "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": ["Ingress", "Egress"],
                  "ingress": [{"from": [{"podSelector": {"matchLabels": relay_selector}}],
                               "ports": [{"protocol": "TCP", "port": PORT}]}],
                  # DNS (blocklists, SPF...), HTTP(S) for rspamd's maps, UDP 11335 for fuzzy hashes.
                  "egress": [dns, {"ports": [{"protocol": "TCP", "port": 80}, {"protocol": "TCP", "port": 443},
                                             {"protocol": "UDP", "port": 11335}]}]}},
    ]
