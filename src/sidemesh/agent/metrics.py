"""The agent's own metrics and the merge of Envoy's, the app's and ours into one scrape (pure).

Prometheus scrapes one port per pod (the agent's 15020), so `/stats/prometheus` there serves
three text-format documents concatenated. Concatenation is valid text format as long as every
part ends with a newline, no part carries the OpenMetrics `# EOF` terminator, and no metric
family appears twice; ours are all prefixed `sidemesh_agent_` (plus Istio's
`istio_agent_cert_expiry_seconds`, which dashboards know) so they cannot collide with Envoy's.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from sidemesh.agent.telemetry import istio_names
from sidemesh.api.prometheus_text import CONTENT_TYPE as CONTENT_TYPE
from sidemesh.api.prometheus_text import Family, Sample, render

DEFAULT_APP_PATH: Final = "/metrics"
DEFAULT_APP_PORT: Final = 80


class MetricsConfigError(ValueError):
    """ISTIO_PROMETHEUS_ANNOTATIONS cannot be used."""


@dataclass(frozen=True)
class AppMetricsTarget:
    """Where the app's own metrics are, from its original `prometheus.io/*` annotations."""

    port: int
    path: str = DEFAULT_APP_PATH


def parse_prometheus_annotations(encoded: str, *, status_port: int) -> AppMetricsTarget | None:
    """The app's scrape target, or None when the app did not ask to be scraped.

    Only an original `prometheus.io/scrape: "true"` counts: without it Prometheus would never
    have scraped the app. A target on the status port itself would make the agent fetch its
    own merged output forever, so it is ignored.
    """
    if not encoded.strip():
        return None
    try:
        original = json.loads(encoded)
    except json.JSONDecodeError as exc:
        raise MetricsConfigError(f"ISTIO_PROMETHEUS_ANNOTATIONS is not valid JSON: {exc}") from exc
    if not isinstance(original, dict):
        raise MetricsConfigError("ISTIO_PROMETHEUS_ANNOTATIONS must be a JSON object")
    if str(original.get("scrape", "")).lower() != "true":
        return None
    port_text = str(original.get("port") or DEFAULT_APP_PORT)
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise MetricsConfigError(f"ISTIO_PROMETHEUS_ANNOTATIONS: port {port_text!r} is not a port")
    path = str(original.get("path") or DEFAULT_APP_PATH)
    if not path.startswith("/"):
        path = "/" + path
    port = int(port_text)
    if port == status_port:
        return None
    return AppMetricsTarget(port=port, path=path)


@dataclass
class AgentMetrics:
    """A handful of counters about the agent itself; mutated from the event loop only."""

    cert_renewals: int = 0
    cert_renewal_failures: int = 0
    cert_expiry_timestamp: float | None = None
    probe_results: Counter[tuple[str, str]] = field(default_factory=Counter)

    def record_probe(self, path: str, *, success: bool) -> None:
        self.probe_results[(path, "success" if success else "failure")] += 1

    def families(self, *, now: float) -> list[Family]:
        probes = [
            Sample(count, (("path", path), ("result", result)))
            for (path, result), count in sorted(self.probe_results.items())
        ]
        families = [
            Family(
                "sidemesh_agent_cert_renewals_total",
                "counter",
                "Workload certificates obtained from the CA.",
                [Sample(self.cert_renewals)],
            ),
            Family(
                "sidemesh_agent_cert_renewal_failures_total",
                "counter",
                "Failed certificate requests.",
                [Sample(self.cert_renewal_failures)],
            ),
            Family(
                "sidemesh_agent_app_probe_results_total",
                "counter",
                "App probes run, by path and result.",
                probes,
            ),
        ]
        if self.cert_expiry_timestamp is not None:
            remaining = max(0.0, self.cert_expiry_timestamp - now)
            families.append(
                Family(
                    "istio_agent_cert_expiry_seconds",
                    "gauge",
                    "Time remaining before the workload certificate expires.",
                    [Sample(remaining)],
                    number_format=".3f",
                )
            )
        return families

    def render(self, *, now: float) -> str:
        return render(self.families(now=now))


def _normalised(text: str) -> str:
    """One scraped document, ready to be followed by another: no `# EOF`, final newline."""
    kept = [line for line in text.splitlines() if line.strip() != "# EOF"]
    while kept and not kept[-1].strip():
        kept.pop()
    return "\n".join(kept) + "\n" if kept else ""


def merge_metrics(parts: Iterable[str]) -> str:
    """Concatenate scraped documents into one valid text-format body, Envoy's standard
    metrics under Istio's names (`istio_requests_total`, not `envoy_istio_requests_total`)."""
    return "".join(_normalised(istio_names(part)) for part in parts)
