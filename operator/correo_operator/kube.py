"""A small async Kubernetes client: exactly the calls the operator makes.

The reconciler (``reconcile``), the finalizer (``deletion``), the status timer
(``statuspoll``) and the DKIM key generator (``dkimkeys``) talk to the API only
through the :class:`Kube` interface below.  :class:`HttpKube` implements it
over the real API server with aiohttp; the tests' API double
(``tests/operator/apidouble.py``) implements it in memory and also serves it
over HTTP, so that :class:`HttpKube` and kopf itself can be run against it.

Writes are server-side apply under one field manager (``correo``, forced), so
that GitOps tools and people editing other fields do not fight the operator;
status goes through the ``status`` subresource as a JSON merge patch of only
what changed.

:data:`PERMISSIONS` lists every (API group, resource, verb) the operator's own
calls need; kopf's needs are in ``kopfapp.KOPF_PERMISSIONS``.  The Helm chart's
RBAC is tested to grant exactly their union.  This module imports nothing from
the rest of the operator.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import ssl
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol
from urllib.parse import quote

import aiohttp

FIELD_MANAGER = "correo"
EVENT_COMPONENT = "correo-operator"
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the REST API."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name, safe='')}"
        if subresource:
            base += f"/{subresource}"
        return base


_RESOURCES = [
    Resource("", "v1", "ConfigMap", "configmaps"),
    Resource("", "v1", "Secret", "secrets"),
    Resource("", "v1", "Service", "services"),
    Resource("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    Resource("", "v1", "Event", "events"),
    Resource("apps", "v1", "Deployment", "deployments"),
    Resource("apps", "v1", "StatefulSet", "statefulsets"),
    Resource("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    Resource("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies"),
    Resource("networking.k8s.io", "v1", "Ingress", "ingresses"),
    Resource("correo.dev", "v1alpha1", "MailDomain", "maildomains"),
    Resource("correo.dev", "v1alpha1", "Mailbox", "mailboxes"),
]
KINDS: dict[tuple[str, str], Resource] = {(r.api_version, r.kind): r for r in _RESOURCES}

MAILDOMAIN = KINDS[("correo.dev/v1alpha1", "MailDomain")]
MAILBOX = KINDS[("correo.dev/v1alpha1", "Mailbox")]
SECRET = KINDS[("v1", "Secret")]
PVC = KINDS[("v1", "PersistentVolumeClaim")]
EVENT = KINDS[("v1", "Event")]


def resource_of(api_version: str, kind: str) -> Resource:
    try:
        return KINDS[(api_version, kind)]
    except KeyError:
        raise KeyError(f"correo does not manage {kind} ({api_version}); add it to kube.KINDS and PERMISSIONS") from None


# What the operator's own calls need, by call site.  ``apply`` needs both
# ``patch`` and ``create`` (server-side apply creates missing objects and is
# authorised as create then).  Compared with the chart's RBAC by the tests.
_CHILD_VERBS = frozenset({"list", "create", "patch", "delete"})  # reconcile: list, apply, prune
PERMISSIONS: dict[tuple[str, str], frozenset[str]] = {
    ("", "configmaps"): _CHILD_VERBS,
    ("", "services"): _CHILD_VERBS,
    ("apps", "deployments"): _CHILD_VERBS,
    ("apps", "statefulsets"): _CHILD_VERBS,
    ("policy", "poddisruptionbudgets"): _CHILD_VERBS,
    ("networking.k8s.io", "networkpolicies"): _CHILD_VERBS,
    ("networking.k8s.io", "ingresses"): _CHILD_VERBS,  # the autoconfig Ingress (spec.autoconfig.ingress)
    # reconcile (children, referenced Secrets), dkimkeys (get, create).
    ("", "secrets"): _CHILD_VERBS | {"get"},
    # deletion: reclaimPolicy Delete removes the volumes.
    ("", "persistentvolumeclaims"): frozenset({"list", "delete"}),
    # status Events (kopfapp posts none of its own).
    ("", "events"): frozenset({"create"}),
    # reconcile reads the domain and its Mailboxes; statuspoll writes status.
    ("correo.dev", "maildomains"): frozenset({"get", "list"}),
    ("correo.dev", "maildomains/status"): frozenset({"patch"}),
    ("correo.dev", "mailboxes"): frozenset({"list"}),
    ("correo.dev", "mailboxes/status"): frozenset({"patch"}),
}


class ApiError(Exception):
    """A failed API call, with the HTTP status and the server's reason."""

    def __init__(self, status: int, reason: str = "", message: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}".strip())
        self.status = status
        self.reason = reason
        self.message = message


class Kube(Protocol):
    """The calls the operator makes; implemented by :class:`HttpKube` and the test double."""

    async def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict | None:
        """The object, or None when it does not exist."""

    async def list(self, api_version: str, kind: str, namespace: str | None, *,
                   labels: dict[str, str] | None = None) -> list[dict]:
        """Objects of a kind in a namespace (all namespaces when None), by label equality."""

    async def apply(self, obj: dict) -> dict:
        """Server-side apply under :data:`FIELD_MANAGER`, forced; creates when missing."""

    async def create(self, obj: dict) -> dict | None:
        """Create; None when an object of that name exists already (nothing is changed)."""

    async def patch_status(self, api_version: str, kind: str, namespace: str, name: str, patch: dict) -> dict | None:
        """JSON merge patch of the ``status`` subresource (``patch`` holds the status fields);
        None when the object is gone."""

    async def delete(self, api_version: str, kind: str, namespace: str | None, name: str, *,
                     propagation: str = "Background") -> bool:
        """Delete; False when it was gone already."""

    async def post_event(self, involved: dict, *, type: str, reason: str, message: str) -> None:
        """A Kubernetes Event about ``involved`` (shown by ``kubectl describe``)."""


Observer = Callable[[str, str], None]  # (verb, "group/resource[/sub]") after each request


def event_body(involved: dict, *, type: str, reason: str, message: str, now: float | None = None,
               instance: str | None = None) -> dict:
    """The core/v1 Event the operator posts; shared by :class:`HttpKube` and the double."""
    meta = involved.get("metadata", {})
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now if now is not None else time.time()))
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name', 'correo')}.", "namespace": meta.get("namespace") or "default"},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion", ""), "kind": involved.get("kind", ""),
            "name": meta.get("name", ""), "namespace": meta.get("namespace", ""),
            "uid": meta.get("uid", ""), "resourceVersion": meta.get("resourceVersion", ""),
        },
        "type": type, "reason": reason, "message": message[:1024],
        "source": {"component": EVENT_COMPONENT},
        "reportingComponent": f"correo.dev/{EVENT_COMPONENT}",
        "reportingInstance": instance or socket.gethostname()[:128],
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
    }


def label_selector(labels: dict[str, str] | None) -> str | None:
    if not labels:
        return None
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def json_merge_diff(old: Any, new: Any) -> Any:
    """The RFC 7386 merge patch that turns ``old`` into ``new`` (None: no change).

    Removed keys become ``null``; lists are replaced whole (as merge patch does).
    """
    if isinstance(old, dict) and isinstance(new, dict):
        out: dict[str, Any] = {}
        for key in old.keys() - new.keys():
            out[key] = None
        for key, value in new.items():
            if key not in old:
                out[key] = value
            else:
                sub = json_merge_diff(old[key], value)
                if sub is not None:
                    out[key] = sub
        return out or None
    if old == new and type(old) is type(new):
        return None
    return new  # callers strip None values first: null means "remove" in a merge patch


# ---------------------------------------------------------------------------
# Credentials
# ---------------------------------------------------------------------------

@dataclass
class Connection:
    """How to reach the API server: in-cluster service account or a kubeconfig."""

    server: str
    ca_path: str | None = None
    insecure: bool = False
    token: str | None = None
    token_path: str | None = None  # re-read when it changes (bound tokens rotate)
    cert_path: str | None = None
    key_path: str | None = None
    default_namespace: str | None = None
    _token_mtime: float = field(default=-1.0, repr=False)
    _refresh: Callable[[], str | None] | None = field(default=None, repr=False)

    def bearer(self) -> str | None:
        if self.token_path:
            try:
                mtime = os.stat(self.token_path).st_mtime
                if mtime != self._token_mtime:
                    self.token = Path(self.token_path).read_text().strip()
                    self._token_mtime = mtime
            except OSError:
                pass
        return self.token

    def refresh(self) -> None:
        """After a 401: re-read the token file or re-run the kubeconfig's credential plugin."""
        self._token_mtime = -1.0
        if self._refresh:
            token = self._refresh()
            if token:
                self.token = token

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        if self.insecure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx = ssl.create_default_context(cafile=self.ca_path)
        if self.cert_path and self.key_path:
            ctx.load_cert_chain(self.cert_path, self.key_path)
        return ctx

    @classmethod
    def in_cluster(cls, sa_dir: Path = SA_DIR) -> "Connection":
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        host = f"[{host}]" if ":" in host else host
        ns_file = sa_dir / "namespace"
        return cls(server=f"https://{host}:{port}", ca_path=str(sa_dir / "ca.crt"),
                   token_path=str(sa_dir / "token"),
                   default_namespace=ns_file.read_text().strip() if ns_file.exists() else None)

    @classmethod
    def from_kubeconfig(cls, path: str | None = None, context: str | None = None) -> "Connection":
        """Parse a kubeconfig (``$KUBECONFIG`` or ``~/.kube/config``) with the kubernetes package,
        which also runs exec credential plugins and writes inline certificates to files."""
        from kubernetes import client as k8s_client
        from kubernetes import config as k8s_config

        cfg = k8s_client.Configuration()
        k8s_config.load_kube_config(config_file=path, context=context, client_configuration=cfg,
                                    persist_config=False)
        auth = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
        token = auth.split(" ", 1)[1] if auth and auth.lower().startswith("bearer ") else auth

        def refresh() -> str | None:
            if cfg.refresh_api_key_hook:
                cfg.refresh_api_key_hook(cfg)
            value = (cfg.api_key or {}).get("authorization") or ""
            return value.split(" ", 1)[1] if value.lower().startswith("bearer ") else value or None

        namespace = None
        try:
            _, active = k8s_config.list_kube_config_contexts(config_file=path)
            namespace = (active or {}).get("context", {}).get("namespace")
        except Exception:  # noqa: BLE001 - the namespace is a convenience only
            pass
        conn = cls(server=cfg.host.rstrip("/"), ca_path=cfg.ssl_ca_cert, insecure=not cfg.verify_ssl,
                   token=token, cert_path=cfg.cert_file, key_path=cfg.key_file, default_namespace=namespace)
        conn._refresh = refresh
        return conn

    @classmethod
    def discover(cls) -> "Connection":
        """In-cluster when running in a pod, else the kubeconfig."""
        if os.environ.get("KUBERNETES_SERVICE_HOST") and (SA_DIR / "token").exists():
            return cls.in_cluster()
        return cls.from_kubeconfig()


# ---------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------

class HttpKube:
    """:class:`Kube` over the real API (JSON over HTTPS, aiohttp)."""

    def __init__(self, conn: Connection, *, observer: Observer | None = None,
                 timeout: float = 30.0, field_manager: str = FIELD_MANAGER) -> None:
        self.conn = conn
        self.observer = observer
        self.field_manager = field_manager
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "HttpKube":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self.conn.ssl_context(), limit=32)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def _call(self, method: str, verb: str, res: Resource, path: str, *, params: dict | None = None,
                    body: Any = None, content_type: str = "application/json", sub: str | None = None) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":"))
            headers["Content-Type"] = content_type
        for attempt in (1, 2):
            token = self.conn.bearer()
            if token:
                headers["Authorization"] = f"Bearer {token}"
            async with self._sess().request(method, self.conn.server + path, params=params, data=data,
                                            headers=headers) as rsp:
                text = await rsp.text()
                if rsp.status == 401 and attempt == 1:
                    await asyncio.to_thread(self.conn.refresh)
                    continue
                if self.observer:
                    self.observer(verb, f"{res.group}/{res.plural}" + (f"/{sub}" if sub else ""))
                if rsp.status >= 400:
                    reason, message = rsp.reason or "", text[:500]
                    try:
                        status = json.loads(text)
                        reason, message = status.get("reason", reason), status.get("message", message)
                    except ValueError:
                        pass
                    raise ApiError(rsp.status, reason, message)
                return json.loads(text) if text else None
        raise AssertionError("unreachable")

    async def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict | None:
        res = resource_of(api_version, kind)
        try:
            return await self._call("GET", "get", res, res.path(namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, api_version: str, kind: str, namespace: str | None, *,
                   labels: dict[str, str] | None = None) -> list[dict]:
        res = resource_of(api_version, kind)
        params: dict[str, str] = {"limit": "500"}
        selector = label_selector(labels)
        if selector:
            params["labelSelector"] = selector
        items: list[dict] = []
        while True:
            page = await self._call("GET", "list", res, res.path(namespace), params=params)
            for item in page.get("items") or []:
                item.setdefault("apiVersion", res.api_version)
                item.setdefault("kind", res.kind)
                items.append(item)
            cont = (page.get("metadata") or {}).get("continue")
            if not cont:
                return items
            params["continue"] = cont

    async def apply(self, obj: dict) -> dict:
        res = resource_of(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        return await self._call("PATCH", "patch", res, res.path(meta.get("namespace"), meta["name"]),
                                params={"fieldManager": self.field_manager, "force": "true"},
                                body=obj, content_type="application/apply-patch+yaml")

    async def create(self, obj: dict) -> dict | None:
        res = resource_of(obj["apiVersion"], obj["kind"])
        try:
            return await self._call("POST", "create", res, res.path(obj["metadata"].get("namespace")),
                                    params={"fieldManager": self.field_manager}, body=obj)
        except ApiError as exc:
            if exc.status == 409:
                return None
            raise

    async def patch_status(self, api_version: str, kind: str, namespace: str, name: str, patch: dict) -> dict | None:
        res = resource_of(api_version, kind)
        try:
            return await self._call("PATCH", "patch", res, res.path(namespace, name, "status"),
                                    params={"fieldManager": self.field_manager}, body={"status": patch},
                                    content_type="application/merge-patch+json", sub="status")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def delete(self, api_version: str, kind: str, namespace: str | None, name: str, *,
                     propagation: str = "Background") -> bool:
        res = resource_of(api_version, kind)
        try:
            await self._call("DELETE", "delete", res, res.path(namespace, name),
                             body={"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation})
            return True
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise

    async def post_event(self, involved: dict, *, type: str, reason: str, message: str) -> None:
        body = event_body(involved, type=type, reason=reason, message=message)
        await self._call("POST", "create", EVENT, EVENT.path(body["metadata"]["namespace"]), body=body)


def b64(text: str | bytes) -> str:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return base64.b64encode(raw).decode("ascii")


def write_kubeconfig(server: str, path: str | None = None, *, token: str = "correo-test",
                     namespace: str = "default") -> str:
    """A minimal kubeconfig for ``server`` (used by tests and the benchmark for the API double)."""
    import yaml

    if path is None:
        fd, path = tempfile.mkstemp(prefix="kubeconfig-", suffix=".yaml")
        os.close(fd)
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": "double",
        "clusters": [{"name": "double", "cluster": {"server": server}}],
        "users": [{"name": "double", "user": {"token": token}}],
        "contexts": [{"name": "double", "context": {"cluster": "double", "user": "double", "namespace": namespace}}],
    }
    Path(path).write_text(yaml.safe_dump(doc))
    return path
