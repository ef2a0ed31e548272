"""The PromQL behind the dashboard, as Kiali asks it of Istio's standard metrics.

Only the server composes queries; the browser never sends PromQL. Every query reads the
`reporter="destination"` series: the side that saw the request arrive knows its real response
code and whether the connection was mutual TLS, and each request is counted once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

REQUESTS: Final = "istio_requests_total"
DURATION_BUCKETS: Final = "istio_request_duration_milliseconds_bucket"
REPORTER: Final = 'reporter="destination"'

SOURCE_LABELS: Final = ("source_workload", "source_workload_namespace")
DESTINATION_LABELS: Final = ("destination_workload", "destination_workload_namespace")
EDGE_LABELS: Final = SOURCE_LABELS + DESTINATION_LABELS
# Aggregated in Python: totals, 5xx and the mutual-TLS share come from one query.
TRAFFIC_LABELS: Final = (*EDGE_LABELS, "response_code", "connection_security_policy")

QUANTILES: Final = (0.5, 0.99)

# Prometheus durations as a range selector accepts them, e.g. 30s, 1m, 1h30m.
_WINDOW = re.compile(r"^(?:[0-9]{1,4}(?:ms|s|m|h|d|w|y))+$")


class QueryError(ValueError):
    """A query parameter the dashboard refuses (it would end up inside PromQL)."""


@dataclass(frozen=True)
class DashboardQueries:
    """The fixed set of queries for one rate window."""

    traffic: str
    edge_latency: dict[float, str]
    workload_latency: dict[float, str]


def checked_window(window: str) -> str:
    if not _WINDOW.fullmatch(window):
        raise QueryError(f"rate window must be a Prometheus duration such as 1m, not {window!a}")
    return window


def _by(labels: tuple[str, ...]) -> str:
    return ", ".join(labels)


def traffic_query(window: str) -> str:
    return (
        f"sum by ({_by(TRAFFIC_LABELS)}) (rate({REQUESTS}{{{REPORTER}}}[{checked_window(window)}]))"
    )


def latency_query(quantile: float, labels: tuple[str, ...], window: str) -> str:
    return (
        f"histogram_quantile({quantile}, sum by (le, {_by(labels)}) "
        f"(rate({DURATION_BUCKETS}{{{REPORTER}}}[{checked_window(window)}])))"
    )


def dashboard_queries(window: str) -> DashboardQueries:
    return DashboardQueries(
        traffic=traffic_query(window),
        edge_latency={q: latency_query(q, EDGE_LABELS, window) for q in QUANTILES},
        workload_latency={q: latency_query(q, DESTINATION_LABELS, window) for q in QUANTILES},
    )
