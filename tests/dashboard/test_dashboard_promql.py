"""Prometheus' answers, read defensively."""

from __future__ import annotations

from typing import Any

import pytest

from sidemesh.dashboard.graph import Sample
from sidemesh.dashboard.promql import PrometheusClient, PrometheusError, parse_vector


def test_vector_with_nan() -> None:
    data = {
        "resultType": "vector",
        "result": [
            {"metric": {"destination_workload": "b"}, "value": [1.5, "2.5"]},
            {"metric": {}, "value": [1.5, "NaN"]},
        ],
    }
    assert parse_vector(data) == [Sample({"destination_workload": "b"}, 2.5), Sample({}, None)]


@pytest.mark.parametrize(
    "data",
    [
        None,
        {"resultType": "matrix", "result": []},
        {"resultType": "vector", "result": {}},
        {"resultType": "vector", "result": ["x"]},
        {"resultType": "vector", "result": [{"metric": {"a": 1}, "value": [0, "1"]}]},
        {"resultType": "vector", "result": [{"metric": {}, "value": [0]}]},
        {"resultType": "vector", "result": [{"metric": {}, "value": [0, 1]}]},
        {"resultType": "vector", "result": [{"metric": {}, "value": [0, "one"]}]},
    ],
)
def test_unexpected_shapes_are_errors(data: Any) -> None:
    with pytest.raises(PrometheusError):
        parse_vector(data)


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("http://127.0.0.1:9090", ("127.0.0.1", 9090, "")),
        ("http://prometheus.monitoring/prom/", ("prometheus.monitoring", 9090, "/prom")),
    ],
)
def test_urls(url: str, where: tuple[str, int, str]) -> None:
    client = PrometheusClient.from_url(url)
    assert (client.host, client.port, client.path_prefix) == where


@pytest.mark.parametrize(
    "url", ["https://p:9090", "file:///etc/passwd", "http://u:secret@p:9090", "http://p/?q=1", "p"]
)
def test_refused_urls(url: str) -> None:
    with pytest.raises(PrometheusError):
        PrometheusClient.from_url(url)


def test_unreachable_prometheus_is_an_error() -> None:
    def refuse(host: str, port: int, timeout: float) -> Any:
        raise ConnectionRefusedError("connection refused")

    client = PrometheusClient("127.0.0.1", 9, dialer=refuse)
    with pytest.raises(PrometheusError, match="connection refused"):
        client.query("up")
    assert client.ready() is False
