"""Control-plane metrics in the Prometheus text format, with Istio's pilot_* names where they
exist. One writer (the event loop), so plain integer updates are safe."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Final

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
class Histogram:
    buckets: tuple[float, ...] = PUSH_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.buckets, seconds)] += 1
        self.total += seconds
        self.count += 1

    def render(self, name: str, help_text: str) -> list[str]:
        lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        cumulative = 0
        for bound, count in zip(self.buckets, self.counts, strict=False):
            cumulative += count
            lines.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        lines += [f"{name}_sum {self.total}", f"{name}_count {self.count}"]
        return lines


@dataclass
class XdsMetrics:
    connected: int = 0
    pushes: dict[str, int] = field(default_factory=dict)  # by short type
    nacks: dict[str, int] = field(default_factory=dict)
    push_time: Histogram = field(default_factory=Histogram)  # snapshot change → response sent
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

    def render(self) -> list[str]:
        lines = [
            "# HELP pilot_xds Number of endpoints connected to this pilot using XDS.",
            "# TYPE pilot_xds gauge",
            f"pilot_xds {self.connected}",
            "# HELP pilot_xds_pushes Pilot build and send errors for lds, rds, cds and eds.",
            "# TYPE pilot_xds_pushes counter",
        ]
        lines += [f'pilot_xds_pushes{{type="{t}"}} {n}' for t, n in sorted(self.pushes.items())]
        lines += ["# HELP pilot_total_xds_rejects Total number of XDS responses rejected.",
                  "# TYPE pilot_total_xds_rejects counter"]  # fmt: skip
        lines += [
            f'pilot_total_xds_rejects{{type="{t}"}} {n}' for t, n in sorted(self.nacks.items())
        ]
        lines += self.push_time.render(
            "pilot_proxy_convergence_time",
            "Delay between a config change and a proxy receiving it.",
        )
        lines += ["# HELP sidemesh_xds_streams_refused_total ADS streams refused on :15012.",
                  "# TYPE sidemesh_xds_streams_refused_total counter"]  # fmt: skip
        lines += [
            f'sidemesh_xds_streams_refused_total{{code="{c}"}} {n}'
            for c, n in sorted(self.refusals.items())
        ]
        lines += ["# TYPE sidemesh_snapshots_total counter",
                  f"sidemesh_snapshots_total {self.snapshots}"]  # fmt: skip
        return lines
