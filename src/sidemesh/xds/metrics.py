"""Control-plane metrics, with Istio's pilot_* names where they exist, written by the shared
text-format writer (`sidemesh.api.prometheus_text`). One writer (the event loop), so plain
integer updates are safe."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from sidemesh.api.prometheus_text import Family, Histogram, Sample, labelled, render_lines

PUSH_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SHORT_TYPES: Final = {
    "type.googleapis.com/envoy.config.listener.v3.Listener": "lds",
    "type.googleapis.com/envoy.config.cluster.v3.Cluster": "cds",
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment": "eds",
    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration": "rds",
}


def short_type(type_url: str) -> str:
    return SHORT_TYPES.get(type_url, "other")


@dataclass
class XdsMetrics:
    connected: int = 0
    pushes: dict[str, int] = field(default_factory=dict)  # by short type
    nacks: dict[str, int] = field(default_factory=dict)
    # snapshot change → response sent
    push_time: Histogram = field(default_factory=lambda: Histogram(PUSH_BUCKETS))
    snapshots: int = 0
    refusals: dict[str, int] = field(default_factory=dict)  # streams refused, by status code

    def refused(self, code: str) -> None:
        self.refusals[code] = self.refusals.get(code, 0) + 1

    def pushed(self, type_url: str) -> None:
        key = short_type(type_url)
        self.pushes[key] = self.pushes.get(key, 0) + 1

    def nacked(self, type_url: str) -> None:
        key = short_type(type_url)
        self.nacks[key] = self.nacks.get(key, 0) + 1

    def families(self) -> list[Family]:
        return [
            Family(
                "pilot_xds",
                "gauge",
                "Number of endpoints connected to this pilot using XDS.",
                [Sample(self.connected)],
            ),
            Family(
                "pilot_xds_pushes",
                "counter",
                "Pilot build and send errors for lds, rds, cds and eds.",
                labelled("type", self.pushes),
            ),
            Family(
                "pilot_total_xds_rejects",
                "counter",
                "Total number of XDS responses rejected.",
                labelled("type", self.nacks),
            ),
            self.push_time.family(
                "pilot_proxy_convergence_time",
                "Delay between a config change and a proxy receiving it.",
            ),
            Family(
                "sidemesh_xds_streams_refused_total",
                "counter",
                "ADS streams refused on :15012.",
                labelled("code", self.refusals),
            ),
            Family("sidemesh_snapshots_total", "counter", None, [Sample(self.snapshots)]),
        ]

    def render(self) -> list[str]:
        return render_lines(self.families())
