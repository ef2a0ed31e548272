"""Prometheus vectors -> nodes and edges: totals, 5xx, the mTLS lock, quantiles, formatting."""

from __future__ import annotations

import pytest

from sidemesh.dashboard.graph import (
    MAX_NODES,
    Sample,
    build_graph,
    format_milliseconds,
    format_rate,
    format_ratio,
)


def traffic(src: str, dst: str, code: str, policy: str, rate: float | None) -> Sample:
    return Sample(
        {
            "source_workload": src,
            "source_workload_namespace": "default",
            "destination_workload": dst,
            "destination_workload_namespace": "default",
            "response_code": code,
            "connection_security_policy": policy,
        },
        rate,
    )


def latency(src: str | None, dst: str, value: float | None) -> Sample:
    labels = {"destination_workload": dst, "destination_workload_namespace": "default"}
    if src is not None:
        labels |= {"source_workload": src, "source_workload_namespace": "default"}
    return Sample(labels, value)


def test_edges_sum_codes_and_policies() -> None:
    graph = build_graph(
        traffic=[
            traffic("a", "b", "200", "mutual_tls", 9.0),
            traffic("a", "b", "503", "mutual_tls", 1.0),
            traffic("a", "c", "200", "mutual_tls", 3.0),
            traffic("a", "c", "200", "none", 1.0),
        ],
        edge_latency={0.5: [latency("a", "b", 9.5)], 0.99: [latency("a", "b", None)]},
        workload_latency={0.5: [latency(None, "b", 9.5)]},
    )
    edges = {(e.source.id, e.destination.id): e.signals for e in graph.edges}
    ab, ac = edges[("default/a", "default/b")], edges[("default/a", "default/c")]
    assert (ab.rate, ab.error_rate, ab.success_ratio, ab.mutual_tls) == (10.0, 1.0, 0.9, True)
    assert ab.shown() == {
        "rate": "10.0 req/s", "success": "90.0%", "errors": "1.00 req/s",
        "p50": "9.50 ms", "p99": "-",
    }  # fmt: skip
    assert ac.mutual_tls is False  # one request in four was plaintext: no lock
    nodes = {n.workload.id: n for n in graph.nodes}
    assert list(nodes) == ["default/a", "default/b", "default/c"]
    assert nodes["default/a"].inbound.rate == 0 and nodes["default/a"].outbound_rate == 14.0
    assert nodes["default/b"].inbound.latency == {0.5: 9.5}


def test_missing_labels_become_unknown_and_bad_values_are_dropped() -> None:
    graph = build_graph(
        traffic=[
            Sample({"destination_workload": "b", "destination_workload_namespace": "x"}, 2.0),
            traffic("a", "b", "200", "none", None),
            traffic("a", "b", "200", "none", float("inf")),
            traffic("a", "b", "200", "none", -1.0),
        ],
        edge_latency={},
        workload_latency={},
    )
    assert [(e.source.id, e.destination.id) for e in graph.edges] == [("unknown", "x/b")]


def test_idle_edge_has_no_success_ratio_and_no_lock() -> None:
    graph = build_graph(
        traffic=[traffic("a", "b", "200", "mutual_tls", 0.0)], edge_latency={}, workload_latency={}
    )
    signals = graph.edges[0].signals
    assert (signals.success_ratio, signals.mutual_tls, signals.shown()["success"]) == (
        None, False, "-",
    )  # fmt: skip


def test_graph_is_cut_and_says_so() -> None:
    samples = [traffic(f"w{i:04d}", "sink", "200", "none", 1.0) for i in range(MAX_NODES + 5)]
    graph = build_graph(traffic=samples, edge_latency={}, workload_latency={})
    assert graph.truncated and len(graph.nodes) == MAX_NODES
    kept = {n.workload for n in graph.nodes}
    assert all(e.source in kept and e.destination in kept for e in graph.edges)


@pytest.mark.parametrize(
    ("value", "rate", "ratio", "ms"),
    [
        (0.0, "0.00 req/s", "0.0%", "0.00 ms"),
        (0.123, "0.12 req/s", "12.3%", "0.12 ms"),
        (12.345, "12.3 req/s", "1234.5%", "12.35 ms"),
        (250.0, "250.0 req/s", "25000.0%", "250 ms"),
    ],
)
def test_formatting(value: float, rate: str, ratio: str, ms: str) -> None:
    assert (format_rate(value), format_ratio(value), format_milliseconds(value)) == (
        rate,
        ratio,
        ms,
    )
    assert format_ratio(None) == format_milliseconds(None) == "-"


def test_json_carries_only_data() -> None:
    graph = build_graph(
        traffic=[traffic("<b>", "b", "200", "mutual_tls", 1.0)],
        edge_latency={},
        workload_latency={},
    )
    document = graph.to_json()
    assert document["edges"][0]["source"] == "default/<b>"  # escaped by the page, not here
    assert document["nodes"][0]["shown"]["outbound"] == "1.00 req/s"
