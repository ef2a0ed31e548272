"""A fixture exporter serving Istio-shaped series (`istio_requests_total`, the duration
histogram) in the Prometheus text format, for a real Prometheus to scrape.

Each scrape adds every edge's fixed traffic once, so every counter is (scrapes × its increment):
all series of one exporter grow in proportion, and the ratios Prometheus computes from them
(success rate, latency quantiles) are exact whatever the timing.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sidemesh.api.prometheus_text import CONTENT_TYPE, Family, Sample, render

# Istio's standard buckets (ms), the first few: enough for the fixture's latencies.
BUCKETS = (0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0)


@dataclass(frozen=True)
class EdgeTraffic:
    source: tuple[str, str]  # (namespace, workload)
    destination: tuple[str, str]
    codes: Mapping[str, int]  # requests per scrape by response code
    mutual_tls: bool = True
    # one scrape's latencies (ms); as many as the edge's requests
    latencies: Sequence[float] = field(default_factory=tuple)
    reporter: str = "destination"


def _labels(edge: EdgeTraffic, code: str | None) -> tuple[tuple[str, str], ...]:
    pairs = [
        ("reporter", edge.reporter),
        ("source_workload", edge.source[1]),
        ("source_workload_namespace", edge.source[0]),
        ("destination_workload", edge.destination[1]),
        ("destination_workload_namespace", edge.destination[0]),
        ("connection_security_policy", "mutual_tls" if edge.mutual_tls else "none"),
    ]
    if code is not None:
        pairs.append(("response_code", code))
    return tuple(pairs)


def exposition(edges: Sequence[EdgeTraffic], scrapes: int) -> str:
    requests: list[Sample] = []
    durations: list[Sample] = []
    for edge in edges:
        for code, count in sorted(edge.codes.items()):
            requests.append(Sample(count * scrapes, _labels(edge, code)))
        labels = _labels(edge, None)
        for bound in (*BUCKETS, float("inf")):
            within = sum(1 for v in edge.latencies if v <= bound) * scrapes
            le = "+Inf" if bound == float("inf") else repr(bound)
            durations.append(Sample(within, (*labels, ("le", le)), "_bucket"))
        durations.append(Sample(sum(edge.latencies) * scrapes, labels, "_sum"))
        durations.append(Sample(len(edge.latencies) * scrapes, labels, "_count"))
    return render([
        Family("istio_requests_total", "counter", "Requests (fixture).", requests),
        Family("istio_request_duration_milliseconds", "histogram", "Latency (fixture).", durations),
    ])  # fmt: skip


class IstioExporter:
    """Serves `exposition(edges, n)` on /metrics, n counting the scrapes so far."""

    def __init__(self, edges: Sequence[EdgeTraffic]) -> None:
        self.edges = list(edges)
        self.scrapes = 0
        self._lock = threading.Lock()
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with exporter._lock:
                    exporter.scrapes += 1
                    body = exposition(exporter.edges, exporter.scrapes).encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._http.server_address[1])
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def __enter__(self) -> IstioExporter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(10)
