"""The dashboard's PromQL: Kiali's questions of Istio's standard metrics, golden strings."""

from __future__ import annotations

import pytest

from sidemesh.dashboard.queries import QueryError, dashboard_queries, traffic_query


def test_traffic_query_reads_the_destination_reporter() -> None:
    assert traffic_query("1m") == (
        "sum by (source_workload, source_workload_namespace, destination_workload, "
        "destination_workload_namespace, response_code, connection_security_policy) "
        '(rate(istio_requests_total{reporter="destination"}[1m]))'
    )


def test_latency_queries_per_edge_and_per_workload() -> None:
    queries = dashboard_queries("30s")
    assert queries.edge_latency[0.99] == (
        "histogram_quantile(0.99, sum by (le, source_workload, source_workload_namespace, "
        "destination_workload, destination_workload_namespace) "
        '(rate(istio_request_duration_milliseconds_bucket{reporter="destination"}[30s])))'
    )
    assert queries.workload_latency[0.5] == (
        "histogram_quantile(0.5, sum by (le, destination_workload, "
        "destination_workload_namespace) "
        '(rate(istio_request_duration_milliseconds_bucket{reporter="destination"}[30s])))'
    )


@pytest.mark.parametrize("window", ["1m", "30s", "1h30m", "500ms", "2d"])
def test_windows_prometheus_accepts(window: str) -> None:
    assert f"[{window}]" in traffic_query(window)


@pytest.mark.parametrize("window", ["", "1", "m", "1m]) or vector(1", "1m ", "-1m", "1M", "1m\n"])
def test_windows_that_would_change_the_query_are_refused(window: str) -> None:
    with pytest.raises(QueryError, match="rate window"):
        dashboard_queries(window)
