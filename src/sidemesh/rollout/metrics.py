"""The restarter's counters, per namespace, written by the shared text-format writer.

Written by the cluster-duties loop only; a scrape from another thread reads plain ints."""

from __future__ import annotations

from collections import Counter
from typing import Final

from sidemesh.api.prometheus_text import Family, Sample, render

RESTARTS: Final = "sidemesh_sidecar_restarts_total"
FAILURES: Final = "sidemesh_sidecar_restart_failures_total"
REFUSALS: Final = "sidemesh_sidecar_evictions_refused_total"
IN_PLACE: Final = "sidemesh_sidecar_upgrades_in_place_total"
_HELP: Final = {
    RESTARTS: "Workloads the stale-sidecar restarter restarted (evicting pods).",
    IN_PLACE: "Pods the stale-sidecar restarter upgraded in place (only istio-proxy restarted).",
    FAILURES: "Stale-sidecar restarts that failed; the run stopped there.",
    REFUSALS: "Evictions a PodDisruptionBudget refused (429); the restarter waited.",
}


class RestarterMetrics:
    def __init__(self) -> None:
        self.counts: dict[str, Counter[str]] = {name: Counter() for name in _HELP}

    def inc(self, name: str, namespace: str) -> None:
        self.counts[name][namespace] += 1

    def value(self, name: str, namespace: str) -> int:
        return self.counts[name][namespace]

    def families(self) -> list[Family]:
        return [
            Family(name, "counter", help_text, [
                Sample(count, (("namespace", namespace),))
                for namespace, count in sorted(self.counts[name].items())
            ] or [Sample(0)])
            for name, help_text in _HELP.items()
        ]  # fmt: skip

    def render(self) -> bytes:
        return render(self.families()).encode()


# The process-wide instance the duty records into (tests pass their own).
RESTARTER_METRICS = RestarterMetrics()
