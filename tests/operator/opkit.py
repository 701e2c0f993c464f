"""Helpers for the operator tests: objects a user would apply, an injected clock,
a fake data plane answering ``/status``, and what kubelet would do (make_ready)."""
from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone


from apidouble import Store
from correo_server import statusdoc

NS = "mail"


def maildomain(name: str = "example-com", domain: str = "example.com", **spec) -> dict:
    return {"apiVersion": "correo.dev/v1alpha1", "kind": "MailDomain",
            "metadata": {"name": name, "namespace": NS}, "spec": {"domain": domain, **spec}}


def mailbox(name: str, address: str, secret: str | None = None, **spec) -> dict:
    return {"apiVersion": "correo.dev/v1alpha1", "kind": "Mailbox",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"address": address, "passwordSecretRef": {"name": secret or f"{name}-password"}, **spec}}


def password_secret(name: str, password: str) -> dict:
    # A hash, so that tests do not spend their time in argon2.
    from correo_server import passwords
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS},
            "type": "Opaque", "stringData": {"password": passwords.hash_password(password, name.encode().ljust(16, b"."))}}


class Clock:
    """An injected clock for status (lastTransitionTime)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 27, 6, 0, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakeDataPlane:
    """Answers ``GET <service>/status`` like the running services would.

    ``queue`` and ``mailstore`` are the documents (statusdoc shapes); set one
    to None to make it unreachable."""

    def __init__(self) -> None:
        self.queue: dict | None = {"service": "queue", "ready": True, "time": "2026-11-27T06:00:00Z",
                                   "totals": statusdoc.empty_figures(), "domains": {}, "senders": {}}
        self.mailstore: dict | None = {"service": "mailstore", "ready": True, "time": "2026-11-27T06:00:00Z",
                                       "mailboxes": {}}
        self.urls: list[str] = []

    async def __call__(self, url: str) -> dict | None:
        self.urls.append(url)
        if "-queue." in url:
            return copy.deepcopy(self.queue)
        if "-mailstore-internal." in url:
            return copy.deepcopy(self.mailstore)
        return None

    def load_mailboxes(self, *addresses: str, used: int = 0, quota: int = 1 << 30) -> None:
        assert self.mailstore is not None
        for a in addresses:
            self.mailstore["mailboxes"][a] = {"messages": 0, "bytes": used, "quotaBytes": quota, "lastDelivery": None}


def make_ready(store: Store, ns: str = NS) -> None:
    """What kubelet and the controllers would do: every workload's replicas ready."""
    for kind in ("Deployment", "StatefulSet"):
        for obj in store.find(kind, ns):
            replicas = obj["spec"].get("replicas", 1)
            store.edit(kind, ns, obj["metadata"]["name"], {"status": {
                "replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
                "observedGeneration": obj["metadata"].get("generation", 1)}}, manager="kube-controller-manager",
                sub="status")
