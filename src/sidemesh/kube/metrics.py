"""Counters for the control plane's Kubernetes duties, written by the shared text-format
writer (`sidemesh.api.prometheus_text`).

Written by the cluster-duties event loop only; rendering reads plain ints, so a scrape from
another thread sees a consistent-enough snapshot without locks (as the webhook's metrics do).
"""

from __future__ import annotations

from collections import defaultdict

from sidemesh.api.prometheus_text import Family, Sample, render

_HELP: dict[str, str] = {
    "sidemesh_kube_api_failures_total": "Kubernetes API calls that failed, by operation.",
    "sidemesh_kube_api_retries_total": "Kubernetes API calls retried after a failure.",
    "sidemesh_webhook_ca_bundle_patches_total": "caBundle patches of webhook configurations.",
    "sidemesh_webhook_cert_rotations_total": "Webhook serving certificates issued.",
    "sidemesh_webhook_cert_file_writes_total": "Times the serving certificate files were written.",
    "sidemesh_leader_transitions_total": "Times this replica gained or lost leadership.",
}
_GAUGES: dict[str, str] = {
    "sidemesh_leader": "1 while this replica holds the lease for its singleton duties.",
}


class KubeMetrics:
    def __init__(self) -> None:
        self.counters: dict[str, dict[tuple[tuple[str, str], ...], int]] = defaultdict(dict)
        self.gauges: dict[str, float] = {}

    def inc(self, name: str, amount: int = 1, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        series = self.counters[name]
        series[key] = series.get(key, 0) + amount

    def value(self, name: str, **labels: str) -> int:
        return self.counters.get(name, {}).get(tuple(sorted(labels.items())), 0)

    def total(self, name: str) -> int:
        return sum(self.counters.get(name, {}).values())

    def set(self, name: str, value: float) -> None:
        self.gauges[name] = value

    def families(self) -> list[Family]:
        families: list[Family] = []
        for name, help_text in _HELP.items():
            # a counter nobody has touched yet still shows as a zero series
            series = dict(self.counters.get(name, {})) or {(): 0}
            samples = [Sample(value, labels) for labels, value in sorted(series.items())]
            families.append(Family(name, "counter", help_text, samples))
        for name, help_text in _GAUGES.items():
            samples = [Sample(self.gauges.get(name, 0))]
            families.append(Family(name, "gauge", help_text, samples, number_format="g"))
        return families

    def render(self) -> bytes:
        return render(self.families()).encode()


# The process-wide instance the duties record into (tests pass their own).
KUBE_METRICS = KubeMetrics()
