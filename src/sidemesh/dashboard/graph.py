"""Prometheus vectors -> the service graph: workloads as nodes, who-calls-whom as edges.

Pure: the input is what `promql` parsed, the output is plain frozen data plus the JSON the page
draws. Numbers are formatted here, once, so the page only places text (and tests read the same
strings the browser shows).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sidemesh.dashboard.queries import QUANTILES

UNKNOWN: Final = "unknown"
MUTUAL_TLS: Final = "mutual_tls"
# Past these the page would be unreadable anyway; the graph says it was cut.
MAX_NODES: Final = 200
MAX_EDGES: Final = 1000


@dataclass(frozen=True)
class Sample:
    """One element of an instant vector; `value` is None when Prometheus said NaN."""

    labels: Mapping[str, str]
    value: float | None


@dataclass(frozen=True, order=True)
class Workload:
    namespace: str
    name: str

    @property
    def id(self) -> str:
        return self.name if self.name == UNKNOWN else f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Signals:
    """Golden signals of some traffic: rate, errors (5xx), latency quantiles in milliseconds."""

    rate: float = 0.0
    error_rate: float = 0.0
    mutual_tls_rate: float = 0.0
    latency: Mapping[float, float | None] = field(default_factory=dict)

    @property
    def success_ratio(self) -> float | None:
        return None if self.rate <= 0 else max(0.0, 1.0 - self.error_rate / self.rate)

    @property
    def mutual_tls(self) -> bool:
        """The lock: every request in the window arrived over mutual TLS."""
        return self.rate > 0 and self.mutual_tls_rate >= self.rate * (1 - 1e-9)

    def shown(self) -> dict[str, str]:
        texts = {
            "rate": format_rate(self.rate),
            "success": format_ratio(self.success_ratio),
            "errors": format_rate(self.error_rate),
        }
        for quantile in QUANTILES:
            texts[quantile_key(quantile)] = format_milliseconds(self.latency.get(quantile))
        return texts


@dataclass(frozen=True)
class Edge:
    source: Workload
    destination: Workload
    signals: Signals


@dataclass(frozen=True)
class Node:
    workload: Workload
    inbound: Signals  # what this workload served (its golden signals)
    outbound_rate: float


@dataclass(frozen=True)
class Graph:
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    truncated: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "nodes": [
                {
                    "id": n.workload.id,
                    "name": n.workload.name,
                    "namespace": n.workload.namespace,
                    "rate": n.inbound.rate,
                    "outboundRate": n.outbound_rate,
                    "shown": {**n.inbound.shown(), "outbound": format_rate(n.outbound_rate)},
                }
                for n in self.nodes
            ],
            "edges": [
                {
                    "source": e.source.id,
                    "destination": e.destination.id,
                    "rate": e.signals.rate,
                    "successRatio": e.signals.success_ratio,
                    "mutualTls": e.signals.mutual_tls,
                    "shown": e.signals.shown(),
                }
                for e in self.edges
            ],
            "truncated": self.truncated,
        }


def quantile_key(quantile: float) -> str:
    return f"p{round(quantile * 100):d}"


def format_rate(rate: float) -> str:
    return f"{rate:.2f} req/s" if rate < 10 else f"{rate:.1f} req/s"


def format_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:.1f}%"


def format_milliseconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} ms" if value < 100 else f"{value:.0f} ms"


def _workload(labels: Mapping[str, str], side: str) -> Workload:
    name = labels.get(f"{side}_workload") or UNKNOWN
    namespace = labels.get(f"{side}_workload_namespace") or UNKNOWN
    return Workload(namespace, name)


def _is_error(code: str) -> bool:
    return len(code) == 3 and code.startswith("5")


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


@dataclass
class _Totals:
    rate: float = 0.0
    error_rate: float = 0.0
    mutual_tls_rate: float = 0.0

    def add(self, labels: Mapping[str, str], rate: float) -> None:
        self.rate += rate
        if _is_error(labels.get("response_code", "")):
            self.error_rate += rate
        if labels.get("connection_security_policy") == MUTUAL_TLS:
            self.mutual_tls_rate += rate

    def signals(self, latency: Mapping[float, float | None]) -> Signals:
        return Signals(self.rate, self.error_rate, self.mutual_tls_rate, dict(latency))


def build_graph(
    *,
    traffic: Iterable[Sample],
    edge_latency: Mapping[float, Sequence[Sample]],
    workload_latency: Mapping[float, Sequence[Sample]],
) -> Graph:
    """The graph from the `queries.dashboard_queries` results."""
    edges: dict[tuple[Workload, Workload], _Totals] = {}
    served: dict[Workload, _Totals] = {}
    sent: dict[Workload, float] = {}
    for sample in traffic:
        rate = _finite(sample.value)
        if rate is None or rate < 0:
            continue
        source, destination = (
            _workload(sample.labels, "source"),
            _workload(sample.labels, "destination"),
        )
        edges.setdefault((source, destination), _Totals()).add(sample.labels, rate)
        served.setdefault(destination, _Totals()).add(sample.labels, rate)
        served.setdefault(source, _Totals())
        sent[source] = sent.get(source, 0.0) + rate

    edge_quantiles: dict[tuple[Workload, Workload], dict[float, float | None]] = {}
    for quantile, samples in edge_latency.items():
        for sample in samples:
            pair = (_workload(sample.labels, "source"), _workload(sample.labels, "destination"))
            edge_quantiles.setdefault(pair, {})[quantile] = _finite(sample.value)
    node_quantiles: dict[Workload, dict[float, float | None]] = {}
    for quantile, samples in workload_latency.items():
        for sample in samples:
            workload = _workload(sample.labels, "destination")
            node_quantiles.setdefault(workload, {})[quantile] = _finite(sample.value)

    workloads = sorted(served)
    truncated = len(workloads) > MAX_NODES or len(edges) > MAX_EDGES
    kept = set(workloads[:MAX_NODES])
    nodes = tuple(
        Node(w, served[w].signals(node_quantiles.get(w, {})), sent.get(w, 0.0))
        for w in sorted(kept)
    )
    edge_list = [
        Edge(s, d, totals.signals(edge_quantiles.get((s, d), {})))
        for (s, d), totals in sorted(edges.items())
        if s in kept and d in kept
    ]
    return Graph(nodes, tuple(edge_list[:MAX_EDGES]), truncated)
