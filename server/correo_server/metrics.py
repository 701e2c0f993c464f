"""Prometheus text exposition for the side port, without a client library.

A :class:`Registry` holds counter and gauge families; gauges may also be
computed at scrape time (``gauge_fn``), which is how the queue reports depth
by state without keeping a second copy of its figures.
"""
from __future__ import annotations

from typing import Callable, Iterable

Labels = tuple[tuple[str, str], ...]


def _labels(labels: dict[str, str] | None) -> Labels:
    return tuple(sorted((labels or {}).items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(name: str, labels: Labels, value: float) -> str:
    if labels:
        inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels)
        name = f"{name}{{{inner}}}"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{name} {value}"


class Registry:
    def __init__(self, prefix: str = "correo") -> None:
        self.prefix = prefix
        self._help: dict[str, tuple[str, str]] = {}
        self._values: dict[str, dict[Labels, float]] = {}
        self._fns: dict[str, Callable[[], Iterable[tuple[dict[str, str], float]]]] = {}

    def _name(self, name: str) -> str:
        return name if name.startswith(self.prefix + "_") else f"{self.prefix}_{name}"

    def counter(self, name: str, help: str) -> str:
        name = self._name(name)
        self._help[name] = ("counter", help)
        self._values.setdefault(name, {})
        return name

    def gauge(self, name: str, help: str) -> str:
        name = self._name(name)
        self._help[name] = ("gauge", help)
        self._values.setdefault(name, {})
        return name

    def gauge_fn(self, name: str, help: str, fn: Callable[[], Iterable[tuple[dict[str, str], float]]]) -> str:
        """A gauge whose samples ``fn`` returns at scrape time as (labels, value)."""
        name = self._name(name)
        self._help[name] = ("gauge", help)
        self._fns[name] = fn
        return name

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        name = self._name(name)
        series = self._values.setdefault(name, {})
        key = _labels(labels)
        series[key] = series.get(key, 0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        self._values.setdefault(self._name(name), {})[_labels(labels)] = value

    def value(self, name: str, **labels: str) -> float:
        return self._values.get(self._name(name), {}).get(_labels(labels), 0)

    def render(self) -> str:
        lines = []
        for name, (kind, help) in sorted(self._help.items()):
            lines.append(f"# HELP {name} {help}")
            lines.append(f"# TYPE {name} {kind}")
            if name in self._fns:
                samples = [(_labels(lbl), val) for lbl, val in self._fns[name]()]
            else:
                samples = sorted(self._values.get(name, {}).items())
            for labels, value in samples:
                lines.append(_fmt(name, labels, value))
        return "\n".join(lines) + "\n"
