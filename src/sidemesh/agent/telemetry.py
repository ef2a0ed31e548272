"""The agent's share of Istio's standard metrics: tell Envoy which workload it serves, serve
Envoy's series under Istio's names, and read the request totals back.

Envoy counts the series itself (`xds/telemetry.py`); the agent does no per-request work. It
puts its workload's metadata in Envoy's environment (read there by `%ENVIRONMENT(...)%`), and
on the merged scrape renames Envoy's `envoy_istio_*` families to Istio's `istio_*` and turns
Envoy's "no value" (`-`) into Istio's: `unknown`, except `response_flags` (Istio's `-` too)
and `grpc_response_status` (empty for non-gRPC requests).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from sidemesh.agent import http
from sidemesh.api import names
from sidemesh.api.telemetry import peer, peer_certificate

if TYPE_CHECKING:  # settings import metrics, which imports this module
    from sidemesh.agent.settings import AgentSettings

ENVOY_PREFIX: Final = "envoy_istio_"
ISTIO_PREFIX: Final = "istio_"
REQUESTS_TOTAL: Final = "istio_requests_total"
_FIXES: Final = (
    ('="-"', f'="{peer.UNKNOWN}"'),
    (f'response_flags="{peer.UNKNOWN}"', 'response_flags="-"'),
    (f'grpc_response_status="{peer.UNKNOWN}"', 'grpc_response_status=""'),
)
_LABEL: Final = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def workload_metadata(settings: AgentSettings) -> peer.WorkloadMetadata:
    """This sidecar's workload, as the standard metrics label it."""
    workload = settings.metadata.get("WORKLOAD_NAME") or settings.identity.pod_name
    return peer.workload_metadata(
        workload=workload, namespace=settings.identity.namespace, labels=settings.labels
    )


def certificate_claim(settings: AgentSettings) -> dict[str, str]:
    """This sidecar's workload for its certificate's subject (`api/telemetry/peer_certificate`):
    the server side of a TCP connection reads it there."""
    return peer_certificate.claim(workload_metadata(settings))


def envoy_environment(settings: AgentSettings) -> dict[str, str]:
    """The variables Envoy must run with for its telemetry configuration: its workload's peer
    metadata, and its OpenTelemetry resource (the span service, `service.name`)."""
    metadata = workload_metadata(settings)
    return {**peer.envoy_environment(metadata), **peer.otel_resource_attributes(metadata)}


def _istio_line(line: str) -> str:
    if line.startswith(ENVOY_PREFIX):
        line = line[len("envoy_") :]
        for old, new in _FIXES:
            line = line.replace(old, new)
        return line
    if line.startswith(("# TYPE envoy_istio_", "# HELP envoy_istio_")):
        return line.replace(ENVOY_PREFIX, ISTIO_PREFIX, 1)
    return line


def istio_names(text: str) -> str:
    """Envoy's scrape with its `envoy_istio_*` families under Istio's names and values."""
    if ENVOY_PREFIX not in text:
        return text
    return "\n".join(_istio_line(line) for line in text.split("\n"))


def samples(text: str, name: str) -> Iterator[tuple[dict[str, str], float]]:
    """The samples of one family in a text-format scrape: (labels, value)."""
    for line in text.splitlines():
        if not line.startswith(name) or line[len(name) : len(name) + 1] not in ("{", " "):
            continue
        labels_text, _, value = line[len(name) :].rpartition(" ")
        try:
            number = float(value)
        except ValueError:
            continue
        labels = {key: raw.replace('\\"', '"').replace("\\\\", "\\")
                  for key, raw in _LABEL.findall(labels_text)}  # fmt: skip
        yield labels, number


@dataclass(frozen=True)
class RequestTotals:
    """`istio_requests_total` summed by reporter: what this sidecar sent and served."""

    source: int
    destination: int


def request_totals(text: str) -> RequestTotals:
    totals = {"source": 0.0, "destination": 0.0}
    for labels, value in samples(text, REQUESTS_TOTAL):
        reporter = labels.get("reporter", "")
        if reporter in totals:
            totals[reporter] += value
    return RequestTotals(int(totals["source"]), int(totals["destination"]))


async def fetch_request_totals(
    host: str, port: int = names.PORT_AGENT_STATUS, *, timeout: float = 5.0
) -> RequestTotals:
    """Read a sidecar's merged endpoint (`:15020/stats/prometheus`) for its request totals
    (`requests_total_source`, `requests_total_destination` of `sidemesh demo --json`)."""
    response = await http.fetch(host, port, "/stats/prometheus", timeout=timeout)
    if response.status != 200:
        raise http.HttpError(f"{host}:{port}/stats/prometheus answered HTTP {response.status}")
    return request_totals(response.text)
