"""The dashboard server: the page and its assets, `/api/graph`, and what it refuses."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest

from sidemesh.dashboard.graph import Sample
from sidemesh.dashboard.promql import PrometheusError
from sidemesh.dashboard.server import DashboardServer, GraphSource, allowed_hosts

REVIEWS = {
    "source_workload": "productpage", "source_workload_namespace": "default",
    "destination_workload": "reviews", "destination_workload_namespace": "default",
    "response_code": "200", "connection_security_policy": "mutual_tls",
}  # fmt: skip


class FakePrometheus:
    """Answers the traffic query with one edge; quantile queries with nothing."""

    host, port = "127.0.0.1", 9090

    def __init__(self) -> None:
        self.queries: list[str] = []
        self.failing = False

    def query(self, promql: str) -> list[Sample]:
        self.queries.append(promql)
        if self.failing:
            raise PrometheusError("Prometheus at 127.0.0.1:9090: connection refused")
        return [] if promql.startswith("histogram_quantile") else [Sample(REVIEWS, 2.0)]


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def served() -> Iterator[tuple[DashboardServer, FakePrometheus, Clock]]:
    prometheus, clock = FakePrometheus(), Clock()
    server = DashboardServer(GraphSource(prometheus, "1m", clock))  # type: ignore[arg-type]
    server.start()
    try:
        yield server, prometheus, clock
    finally:
        server.stop()


def request(
    server: DashboardServer, path: str, *, method: str = "GET", host: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        headers = {"Host": host or f"127.0.0.1:{server.port}"}
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_page_and_assets_are_served_with_a_strict_policy(served: Any) -> None:
    server, _, _ = served
    for path, kind in [("/", "text/html"), ("/dashboard.js", "text/javascript"),
                       ("/dashboard.css", "text/css")]:  # fmt: skip
        status, headers, body = request(server, path)
        assert status == 200 and headers["Content-Type"].startswith(kind) and body
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
    _, _, page = request(server, "/")
    assert b"<script>" not in page and b"http://" not in page.replace(b"http://www.w3.org", b"")


def test_graph_is_json_from_the_fixed_queries(served: Any) -> None:
    server, prometheus, _ = served
    status, headers, body = request(server, "/api/graph?query=up")  # no PromQL from the browser
    document = json.loads(body)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert document["error"] is None and document["window"] == "1m"
    assert [(e["source"], e["destination"], e["mutualTls"]) for e in document["edges"]] == [
        ("default/productpage", "default/reviews", True)
    ]
    assert "up" not in prometheus.queries and len(prometheus.queries) == 5


def test_prometheus_is_asked_at_most_once_a_second(served: Any) -> None:
    server, prometheus, clock = served
    request(server, "/api/graph")
    request(server, "/api/graph")
    assert len(prometheus.queries) == 5
    clock.now += 1.5
    request(server, "/api/graph")
    assert len(prometheus.queries) == 10


def test_prometheus_failure_is_a_bad_gateway_with_the_reason(served: Any) -> None:
    server, prometheus, _ = served
    prometheus.failing = True
    status, _, body = request(server, "/api/graph")
    assert status == 502 and "connection refused" in json.loads(body)["error"]


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.1.nip.io", ""])
def test_foreign_host_headers_are_refused(served: Any, host: str) -> None:
    server, prometheus, _ = served
    status, _, _ = request(server, "/api/graph", host=host or " ")
    assert status == 421 and prometheus.queries == []


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
def test_only_reads(served: Any, method: str) -> None:
    server, _, _ = served
    assert request(server, "/api/graph", method=method)[0] == 405


def test_unknown_paths(served: Any) -> None:
    server, _, _ = served
    for path in ["/static/../../etc/passwd", "/index.html", "/api/graph/x"]:
        assert request(server, path)[0] == 404


def test_allowed_hosts() -> None:
    assert allowed_hosts("127.0.0.1", 20001) >= {"localhost:20001", "127.0.0.1:20001", "[::1]"}
    assert allowed_hosts("192.0.2.7", 8080) == {"192.0.2.7", "192.0.2.7:8080"}
    assert "[fd00::1]:80" in allowed_hosts("fd00::1", 80)
