"""The operator's own Prometheus metrics: reconciles, errors, durations, API calls.

Kept with ``prometheus-client`` through :class:`correo_server.metrics.Registry`
and served by ``kopfapp`` on ``--metrics-port`` through the same side port the
services use (``correo_server.sideport``: ``/metrics``, ``/healthz``,
``/readyz``, ``/status``).  ``HttpKube`` reports every API request here
(:meth:`OpMetrics.api_request`), ``reconcile.Reconciler`` every pass and
``statuspoll`` every status read and patch.

Families (prefix ``correo_operator_``)::

    reconciles_total{trigger,result}          passes, by what triggered them
    reconcile_errors_total{trigger}           failed passes
    reconcile_duration_seconds (histogram)    time per pass, status included
    api_requests_total{verb,resource}         every API call
    api_writes_total{verb,resource}           the mutating ones
    status_reads_total{component,result}      GET /status of the services
    status_patches_total                      status subresource patches
"""
from __future__ import annotations

from correo_server.metrics import Registry

BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
WRITE_VERBS = frozenset({"create", "patch", "update", "delete", "deletecollection"})


class OpMetrics:
    def __init__(self) -> None:
        r = self.registry = Registry("correo_operator")
        self.reconciles = r.counter("reconciles_total", "Reconcile passes of a MailDomain, by trigger and result.",
                                    labels=("trigger", "result"))
        self.errors = r.counter("reconcile_errors_total", "Reconcile passes that failed, by trigger.",
                                labels=("trigger",))
        self.duration = r.histogram("reconcile_duration_seconds", "Seconds per reconcile pass (status included).",
                                    labels=(), buckets=BUCKETS)
        self.requests = r.counter("api_requests_total", "Kubernetes API requests, by verb and resource.",
                                  labels=("verb", "resource"))
        self.writes = r.counter("api_writes_total",
                                "Kubernetes API writes (create, patch, delete), by verb and resource.",
                                labels=("verb", "resource"))
        self.reads = r.counter("status_reads_total", "Reads of the services' /status, by component and result.",
                               labels=("component", "result"))
        self.patches = r.counter("status_patches_total", "Status subresource patches of MailDomains and Mailboxes.",
                                 labels=())

    def reconciled(self, trigger: str, *, ok: bool, seconds: float) -> None:
        self.registry.inc(self.reconciles, trigger=trigger, result="ok" if ok else "error")
        if not ok:
            self.registry.inc(self.errors, trigger=trigger)
        self.registry.observe(self.duration, seconds)

    def api_request(self, verb: str, resource: str) -> None:
        self.registry.inc(self.requests, verb=verb, resource=resource)
        if verb in WRITE_VERBS:
            self.registry.inc(self.writes, verb=verb, resource=resource)

    def status_read(self, component: str, *, ok: bool) -> None:
        self.registry.inc(self.reads, component=component, result="ok" if ok else "unreachable")

    def status_patched(self, n: int = 1) -> None:
        self.registry.inc(self.patches, n)

    def total_writes(self) -> float:
        return self.registry.total(self.writes)

    def render(self) -> str:
        return self.registry.render()
