"""The one client the dashboard has for Prometheus: instant queries over its HTTP API.

Prometheus' answer is parsed defensively (it may be a different server than we think): a
bounded body, an expected shape, or a `PrometheusError` the page can show. The socket comes
from an injected dialer, so the local runtime can reach a Prometheus that listens inside the
node's network namespace.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from sidemesh.dashboard.graph import Sample

Dialer = Callable[[str, int, float], socket.socket]
MAX_RESPONSE_BYTES: Final = 16 * 1024 * 1024
DEFAULT_TIMEOUT: Final = 10.0


class PrometheusError(RuntimeError):
    """Prometheus could not be asked, or answered something that is not an instant vector."""


def direct_dialer(host: str, port: int, timeout: float) -> socket.socket:
    return socket.create_connection((host, port), timeout=timeout)


class _DialedConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, timeout: float, dialer: Dialer) -> None:
        super().__init__(host, port, timeout=timeout)
        self._dialer = dialer

    def connect(self) -> None:
        self.sock = self._dialer(self.host, self.port, self.timeout or DEFAULT_TIMEOUT)


@dataclass(frozen=True)
class PrometheusClient:
    """Asks http://host:port<path prefix>/api/v1/query."""

    host: str
    port: int
    path_prefix: str = ""
    timeout: float = DEFAULT_TIMEOUT
    dialer: Dialer = direct_dialer

    @classmethod
    def from_url(cls, url: str, *, dialer: Dialer = direct_dialer) -> PrometheusClient:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise PrometheusError(
                f"Prometheus URL must be http://HOST[:PORT][/PREFIX], not {url!a}"
            )
        if parsed.username or parsed.password or parsed.query or parsed.fragment:
            raise PrometheusError(
                "Prometheus URL must not carry credentials, a query or a fragment"
            )
        return cls(parsed.hostname, parsed.port or 9090, parsed.path.rstrip("/"), dialer=dialer)

    def get(self, path: str, query: dict[str, str] | None = None) -> Any:
        target = self.path_prefix + path
        if query:
            target += "?" + urllib.parse.urlencode(query)
        connection = _DialedConnection(self.host, self.port, self.timeout, self.dialer)
        try:
            connection.request("GET", target, headers={"Accept": "application/json"})
            response = connection.getresponse()
            body = response.read(MAX_RESPONSE_BYTES + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise PrometheusError(f"Prometheus at {self.host}:{self.port}: {exc}") from exc
        finally:
            connection.close()
        if len(body) > MAX_RESPONSE_BYTES:
            raise PrometheusError("Prometheus answered more than the dashboard reads")
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise PrometheusError(f"Prometheus answered HTTP {response.status}, not JSON") from exc
        if not isinstance(document, dict) or document.get("status") != "success":
            error = document.get("error") if isinstance(document, dict) else None
            raise PrometheusError(f"Prometheus refused the query: {str(error)[:200]!a}")
        return document.get("data")

    def query(self, promql: str) -> list[Sample]:
        """An instant query whose result must be a vector."""
        return parse_vector(self.get("/api/v1/query", {"query": promql}))

    def ready(self) -> bool:
        try:
            connection = _DialedConnection(self.host, self.port, self.timeout, self.dialer)
            try:
                connection.request("GET", self.path_prefix + "/-/ready")
                return connection.getresponse().status == 200
            finally:
                connection.close()
        except (OSError, http.client.HTTPException):
            return False


def _number(text: object) -> float | None:
    if not isinstance(text, str):
        raise PrometheusError("a sample value is not a string")
    try:
        value = float(text)
    except ValueError as exc:
        raise PrometheusError(f"a sample value is not a number: {text[:40]!a}") from exc
    return None if value != value else value  # NaN: no data (e.g. a quantile of no requests)


def parse_vector(data: Any) -> list[Sample]:
    if not isinstance(data, dict) or data.get("resultType") != "vector":
        raise PrometheusError("Prometheus answered something other than an instant vector")
    result = data.get("result")
    if not isinstance(result, list):
        raise PrometheusError("the vector has no result list")
    samples = []
    for element in result:
        if not isinstance(element, dict):
            raise PrometheusError("a vector element is not an object")
        metric, value = element.get("metric", {}), element.get("value")
        if not isinstance(metric, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metric.items()
        ):
            raise PrometheusError("a vector element's labels are not strings")
        if not isinstance(value, list) or len(value) != 2:
            raise PrometheusError("a vector element has no [time, value] pair")
        samples.append(Sample(dict(metric), _number(value[1])))
    return samples
