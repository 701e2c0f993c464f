"""Prometheus metrics for the side port, with the official client library
(``prometheus-client``).

Every correo process part owns one :class:`Registry`: a ``CollectorRegistry``
of its own (so that several services in one test process never mix), served
on ``/metrics`` by :mod:`.sideport`.  Call sites name families without the
``correo_`` prefix and stay one line::

    metrics.counter("relay_rejections_total", "Commands or messages refused, by reason", labels=("reason",))
    metrics.inc("relay_rejections_total", reason="rate_limited")
    metrics.histogram("relay_session_duration_seconds", "...", labels=("listener",), buckets=SESSION_BUCKETS)
    metrics.observe("relay_session_duration_seconds", 1.2, listener="smtp")

Kinds: counters (:meth:`~Registry.inc`), gauges (:meth:`~Registry.set`, or
``inc`` by a negative amount), histograms (:meth:`~Registry.observe`), and
families computed at scrape time from figures a service already keeps
(:meth:`~Registry.gauge_fn`, :meth:`~Registry.counter_fn`: the queue's depth,
its counts kept across restarts).  Two shared gauges: the expiry of the TLS
certificate a service presents (:meth:`~Registry.watch_tls`) and the space on
a data volume (:meth:`~Registry.watch_volume`).  A family declared without
``labels`` takes the label names of its first use; one used without being
declared is declared then (a counter when its name ends in ``_total``).

Names follow the Prometheus conventions (base units; ``_total`` for
counters; ``_seconds``, ``_bytes``, ``_timestamp_seconds``).
``docs/metrics.md`` lists every family; ``tests/monitoring`` checks the list
against what the services and the operator expose.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterable

import prometheus_client
from prometheus_client import (CollectorRegistry, Counter, Gauge, GCCollector, Histogram, PlatformCollector,
                               ProcessCollector, exposition, generate_latest)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

# ``x_created`` series (one more per counter and histogram child) carry
# nothing an operator of correo needs.
prometheus_client.disable_created_metrics()

# What generate_latest writes: the classic text format, which every Prometheus reads.
CONTENT_TYPE = getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4", "text/plain; version=0.0.4; charset=utf-8")
# Latencies of single operations: an IMAP command, an LMTP/SMTP delivery.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Whole client sessions, from connect to close.
SESSION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

Samples = Iterable[tuple[dict[str, str], float]]


class _Computed:
    """A gauge or counter family whose samples a function returns at scrape time."""

    def __init__(self, name: str, help: str, kind: str, fn: Callable[[], Samples]) -> None:
        self.name, self.help, self.kind, self.fn = name, help, kind, fn

    def _family(self, labels: list[str]):
        if self.kind == "counter":
            return CounterMetricFamily(self.name, self.help, labels=labels)
        return GaugeMetricFamily(self.name, self.help, labels=labels)

    def describe(self):
        yield self._family([])

    def collect(self):
        samples = [(dict(lbl), float(v)) for lbl, v in self.fn()]
        names = sorted({k for lbl, _ in samples for k in lbl})
        family = self._family(names)
        for lbl, value in samples:
            family.add_metric([str(lbl.get(k, "")) for k in names], value)
        yield family


class _Volumes:
    """``correo_volume_{available,size}_bytes{volume}``: statvfs of each data volume at scrape time."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.paths: dict[str, Path] = {}

    def _families(self):
        return (GaugeMetricFamily(f"{self.prefix}_volume_available_bytes",
                                  "Bytes free for correo on a data volume (statvfs f_bavail), by volume",
                                  labels=["volume"]),
                GaugeMetricFamily(f"{self.prefix}_volume_size_bytes", "Size of a data volume in bytes, by volume",
                                  labels=["volume"]))

    def describe(self):
        return self._families()

    def collect(self):
        free, size = self._families()
        for volume, path in sorted(self.paths.items()):
            try:
                st = os.statvfs(path)
            except OSError:
                continue  # not there (yet): no sample rather than a wrong one
            free.add_metric([volume], st.f_bavail * st.f_frsize)
            size.add_metric([volume], st.f_blocks * st.f_frsize)
        return [free, size]


class Registry:
    """One process part's metrics: declare families, update them, render them."""

    def __init__(self, prefix: str = "correo", *, process: bool = True) -> None:
        self.prefix = prefix
        self.registry = CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        self._kinds: dict[str, str] = {}
        self._decl: dict[str, tuple[str, tuple[str, ...] | None, tuple[float, ...]]] = {}
        self._metrics: dict[str, Any] = {}
        self._provisional: set[str] = set()
        self._children: dict[tuple, Any] = {}
        self._volumes: _Volumes | None = None
        if process:  # process_cpu_seconds_total, process_resident_memory_bytes, python_gc_*, python_info
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)

    def _name(self, name: str) -> str:
        return name if name.startswith(self.prefix + "_") else f"{self.prefix}_{name}"

    # -- declaring ------------------------------------------------------------
    def _declare(self, kind: str, name: str, help: str, labels: Iterable[str] | None,
                 buckets: tuple[float, ...] = LATENCY_BUCKETS) -> str:
        full = self._name(name)
        labels = tuple(labels) if labels is not None else None
        with self._lock:
            known = self._kinds.get(full)
            if known is None:
                self._kinds[full] = kind
                self._decl[full] = (help, labels, buckets)
            elif known != kind:
                raise ValueError(f"metric {full} is a {known}, not a {kind}")
            help, _, buckets = self._decl[full]  # declared again (IMAP and POP3 share families): first wins
            if labels is not None and (full not in self._metrics or full in self._provisional):
                self._replace(kind, full, help, labels, buckets)
            elif full not in self._metrics:
                # Label names unknown yet: shown without labels (a 0 from the start) until a
                # first use with labels replaces it.
                self._create(kind, full, help, (), buckets)
                self._provisional.add(full)
        return full

    def _replace(self, kind: str, full: str, help: str, labels: tuple[str, ...], buckets: tuple[float, ...]):
        old = self._metrics.pop(full, None)
        if old is not None:
            self.registry.unregister(old)
            self._children.clear()  # some may belong to the replaced metric
        self._provisional.discard(full)
        self._decl[full] = (help, labels, buckets)
        return self._create(kind, full, help, labels, buckets)

    def _create(self, kind: str, full: str, help: str, labels: tuple[str, ...], buckets: tuple[float, ...]):
        if kind == "counter":
            metric = Counter(full, help, labels, registry=self.registry)
        elif kind == "gauge":
            metric = Gauge(full, help, labels, registry=self.registry)
        else:
            metric = Histogram(full, help, labels, registry=self.registry, buckets=buckets)
        self._metrics[full] = metric
        return metric

    def counter(self, name: str, help: str, labels: Iterable[str] | None = None) -> str:
        return self._declare("counter", name, help, labels)

    def gauge(self, name: str, help: str, labels: Iterable[str] | None = None) -> str:
        return self._declare("gauge", name, help, labels)

    def histogram(self, name: str, help: str, labels: Iterable[str] | None = None,
                  buckets: tuple[float, ...] = LATENCY_BUCKETS) -> str:
        return self._declare("histogram", name, help, labels, buckets)

    def _computed(self, kind: str, name: str, help: str, fn: Callable[[], Samples]) -> str:
        full = self._name(name)
        with self._lock:
            if full in self._kinds:
                return full
            self._kinds[full] = "computed"
        self.registry.register(_Computed(full, help, kind, fn))
        return full

    def gauge_fn(self, name: str, help: str, fn: Callable[[], Samples]) -> str:
        """A gauge whose samples ``fn`` returns at scrape time as (labels, value)."""
        return self._computed("gauge", name, help, fn)

    def counter_fn(self, name: str, help: str, fn: Callable[[], Samples]) -> str:
        """A counter kept elsewhere (e.g. across restarts), read at scrape time."""
        return self._computed("counter", name, help, fn)

    def watch_tls(self, tls: Any) -> None:
        """``correo_tls_certificate_expiry_timestamp_seconds``: when the
        certificate ``tls`` (a :class:`~correo_server.tlsfiles.ServerTLS`, or
        None: no TLS, no sample) presents now stops being valid, read at
        scrape time (so a renewal shows at once)."""
        def expiry() -> Samples:
            when = tls.not_after() if tls is not None else None
            return [] if when is None else [({}, when)]
        self.gauge_fn("tls_certificate_expiry_timestamp_seconds",
                      "When the TLS certificate the service presents expires (Unix time)", expiry)

    def watch_volume(self, volume: str, path: str | os.PathLike[str]) -> None:
        """Report free and total space of the volume holding ``path`` as ``volume``."""
        with self._lock:
            if self._volumes is None:
                self._volumes = _Volumes(self.prefix)
                self.registry.register(self._volumes)
            self._volumes.paths[volume] = Path(path)

    # -- updating ----------------------------------------------------------------
    def _child(self, name: str, labels: dict[str, str], kind: str):
        """The series to update; children are cached (``labels()`` of the
        client library costs ten times an increment, and the relay updates
        series on every command)."""
        key = (name, *labels.items())
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._lookup(name, labels, kind)
        return child

    def _lookup(self, name: str, labels: dict[str, str], kind: str):
        full = self._name(name)
        metric = self._metrics.get(full)
        if metric is None or full in self._provisional:  # the first use decides the label names
            with self._lock:
                metric = self._metrics.get(full)
                if metric is None or (full in self._provisional and labels):
                    kind = self._kinds.setdefault(full, kind)
                    help, _, buckets = self._decl.get(full, (full.replace("_", " "), None, LATENCY_BUCKETS))
                    metric = self._replace(kind, full, help, tuple(sorted(labels)), buckets)
                self._provisional.discard(full)
        return metric.labels(**labels) if labels else metric

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        kind = "counter" if name.endswith("_total") and amount >= 0 else "gauge"
        self._child(name, labels, kind).inc(amount)

    def set(self, name: str, value: float, **labels: str) -> None:
        self._child(name, labels, "gauge").set(value)

    def observe(self, name: str, value: float, **labels: str) -> None:
        self._child(name, labels, "histogram").observe(value)

    # -- reading -----------------------------------------------------------------
    def value(self, name: str, **labels: str) -> float:
        """The current value of one series (0 when it has none yet); a
        histogram's number of observations."""
        full = self._name(name)
        kind = self._kinds.get(full)
        sample = full
        if kind == "counter" and not full.endswith("_total"):
            sample = full + "_total"
        elif kind == "histogram":
            sample = full + "_count"
        found = self.registry.get_sample_value(sample, {k: str(v) for k, v in labels.items()})
        return float(found or 0.0)

    def total(self, name: str) -> float:
        """The sum of a counter or gauge over all its label values."""
        full = self._name(name)
        target = full[:-len("_total")] if full.endswith("_total") else full
        total = 0.0
        for family in self.registry.collect():
            if family.name == target:
                total += sum(s.value for s in family.samples if s.name in (full, target + "_total", target))
        return total

    def render(self) -> str:
        """The Prometheus text exposition (format 0.0.4)."""
        return generate_latest(self.registry).decode("utf-8")
