"""The dashboard's web server: the page, its script and style, and `/api/graph`.

The browser talks only to this server, and never sends PromQL: `/api/graph` runs the fixed
queries of `queries.py` against Prometheus and answers the graph as JSON. Every label value
reaches the page as JSON data and is placed with `textContent`, and the Content-Security-Policy
allows no inline script, so a hostile workload name stays text. Requests whose Host header is
not this server's are refused (a web page elsewhere cannot rebind a name to our loopback).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Final

from sidemesh.dashboard.graph import Graph, build_graph
from sidemesh.dashboard.promql import PrometheusClient, PrometheusError
from sidemesh.dashboard.queries import dashboard_queries

log = logging.getLogger("sidemesh.dashboard")

STATIC_FILES: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
LOOPBACK_NAMES: Final = ("localhost", "127.0.0.1", "[::1]")
MIN_QUERY_INTERVAL: Final = 1.0  # many open tabs still ask Prometheus at most once a second


def static_file(name: str) -> bytes:
    return resources.files("sidemesh.dashboard").joinpath("static", name).read_bytes()


@dataclass(frozen=True)
class GraphAnswer:
    status: int
    document: dict[str, Any]


class GraphSource:
    """Runs the dashboard's queries against Prometheus, at most once per interval."""

    def __init__(
        self,
        client: PrometheusClient,
        window: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.window = window
        self.queries = dashboard_queries(window)  # refuses a bad window before serving
        self._clock = clock
        self._lock = threading.Lock()
        self._last: tuple[float, GraphAnswer] | None = None

    def graph(self) -> Graph:
        q = self.queries
        return build_graph(
            traffic=self.client.query(q.traffic),
            edge_latency={k: self.client.query(v) for k, v in q.edge_latency.items()},
            workload_latency={k: self.client.query(v) for k, v in q.workload_latency.items()},
        )

    def answer(self) -> GraphAnswer:
        with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last[0] < MIN_QUERY_INTERVAL:
                return self._last[1]
            try:
                document = {"window": self.window, **self.graph().to_json(), "error": None}
                answer = GraphAnswer(HTTPStatus.OK, document)
            except PrometheusError as exc:
                log.warning("dashboard query failed: %s", exc)
                answer = GraphAnswer(
                    HTTPStatus.BAD_GATEWAY, {"window": self.window, "error": str(exc)}
                )
            self._last = (now, answer)
            return answer


def allowed_hosts(host: str, port: int) -> frozenset[str]:
    """Host header values this server answers: its own address, and loopback names."""
    names = {host, f"[{host}]"} if ":" in host else {host}
    if host in ("127.0.0.1", "::1", "localhost"):
        names |= set(LOOPBACK_NAMES)
    return frozenset({*names, *(f"{n}:{port}" for n in names)})


def _handler(source: GraphSource, hosts: Iterable[str]) -> type[BaseHTTPRequestHandler]:
    accepted = frozenset(hosts)

    class Handler(BaseHTTPRequestHandler):
        server_version = "sidemesh-dashboard"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in SECURITY_HEADERS.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, document: dict[str, Any]) -> None:
            self._send(status, json.dumps(document).encode(), "application/json")

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            if self.headers.get("Host", "") not in accepted:
                self._json(HTTPStatus.MISDIRECTED_REQUEST, {"error": "unexpected Host header"})
                return
            path = self.path.split("?", 1)[0]
            if path == "/api/graph":
                answer = source.answer()
                self._json(answer.status, answer.document)
            elif path == "/healthz":
                self._send(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8")
            elif path in STATIC_FILES:
                name, content_type = STATIC_FILES[path]
                self._send(HTTPStatus.OK, static_file(name), content_type)
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

        def _refuse(self) -> None:
            self._json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "only GET"})

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

    return Handler


class DashboardServer:
    """The server on host:port (port 0: any free one) in a background thread."""

    def __init__(self, source: GraphSource, host: str = "127.0.0.1", port: int = 0) -> None:
        self._http = ThreadingHTTPServer((host, port), _handler(source, ()))
        self._http.daemon_threads = True
        self.host, self.port = host, int(self._http.server_address[1])
        self._http.RequestHandlerClass = _handler(source, allowed_hosts(host, self.port))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def serve_forever(self) -> None:
        self._http.serve_forever(poll_interval=0.1)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="dashboard", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        if self._thread is not None:
            self._thread.join(10)
