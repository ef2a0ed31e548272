"""Counters for the control plane's Kubernetes duties, in the Prometheus text format.

Written by the cluster-duties event loop only; rendering reads plain ints, so a scrape from
another thread sees a consistent-enough snapshot without locks (as the webhook's metrics do).
"""

from __future__ import annotations

from collections import defaultdict

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

    def render(self) -> bytes:
        lines: list[str] = []
        for name, help_text in _HELP.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
            series = dict(self.counters.get(name, {})) or {(): 0}
            for labels, value in sorted(series.items()):
                rendered = ",".join(f'{k}="{v}"' for k, v in labels)
                lines.append(f"{name}{{{rendered}}} {value}" if rendered else f"{name} {value}")
        for name, help_text in _GAUGES.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
            lines.append(f"{name} {self.gauges.get(name, 0):g}")
        return ("\n".join(lines) + "\n").encode()


# The process-wide instance the duties record into (tests pass their own).
KUBE_METRICS = KubeMetrics()
