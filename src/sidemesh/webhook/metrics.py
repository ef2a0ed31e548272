"""Injection metrics in the Prometheus text exposition format, written by hand.

Istio's metric names, so existing dashboards and alerts keep working. There are five series
families and one writer (the event loop), so a dependency on prometheus_client would buy
nothing: updates are plain integer and float additions with no await in between, which is
atomic with respect to the single event loop that serves requests.

Skips and failures carry a `reason` label with the outcome code. The codes come from a fixed
set (the engine's outcome codes and the webhook's own request-error codes), never from
client input, so the label cannot grow without bound.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Final, Literal

# 100 µs .. 10 s, roughly 1-2.5-5 per decade.
TIME_BUCKETS: Final[tuple[float, ...]] = (
    0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05,
    0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

OutcomeClass = Literal["success", "skip", "failure"]


class InjectionMetrics:
    """Counters and the latency histogram of the injection endpoint."""

    def __init__(self, buckets: tuple[float, ...] = TIME_BUCKETS) -> None:
        self.buckets = buckets
        self.requests = 0
        self.successes = 0
        self.skips: dict[str, int] = {}
        self.failures: dict[str, int] = {}
        # per-bucket (not cumulative) counts; the last slot is +Inf
        self._bucket_counts = [0] * (len(buckets) + 1)
        self._time_sum = 0.0
        self._time_count = 0

    def record(self, outcome: OutcomeClass, reason: str, seconds: float) -> None:
        """Count one request to the injection endpoint and how it ended."""
        self.requests += 1
        if outcome == "success":
            self.successes += 1
        elif outcome == "skip":
            self.skips[reason] = self.skips.get(reason, 0) + 1
        else:
            self.failures[reason] = self.failures.get(reason, 0) + 1
        self._bucket_counts[bisect_left(self.buckets, seconds)] += 1
        self._time_sum += seconds
        self._time_count += 1

    def render(self) -> bytes:
        """The exposition text (`text/plain; version=0.0.4`)."""
        lines: list[str] = []
        _counter(lines, "sidecar_injection_requests_total", "Total injection requests.")
        lines.append(f"sidecar_injection_requests_total {self.requests}")
        _counter(lines, "sidecar_injection_success_total", "Total successful injections.")
        lines.append(f"sidecar_injection_success_total {self.successes}")
        _counter(lines, "sidecar_injection_skip_total", "Total skipped injections, by reason.")
        _labelled(lines, "sidecar_injection_skip_total", self.skips)
        _counter(
            lines,
            "sidecar_injection_failure_total",
            "Total failed injections (denied pods and bad requests), by reason.",
        )
        _labelled(lines, "sidecar_injection_failure_total", self.failures)
        self._render_histogram(lines)
        lines.append("")
        return "\n".join(lines).encode()

    def _render_histogram(self, lines: list[str]) -> None:
        name = "sidecar_injection_time_seconds"
        lines.append(f"# HELP {name} Time taken to answer an injection request.")
        lines.append(f"# TYPE {name} histogram")
        cumulative = 0
        for bound, count in zip(self.buckets, self._bucket_counts, strict=False):
            cumulative += count
            lines.append(f'{name}_bucket{{le="{_number(bound)}"}} {cumulative}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {self._time_count}')
        lines.append(f"{name}_sum {_number(self._time_sum)}")
        lines.append(f"{name}_count {self._time_count}")


def _counter(lines: list[str], name: str, help_text: str) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} counter")


def _labelled(lines: list[str], name: str, counts: dict[str, int]) -> None:
    for reason in sorted(counts):
        lines.append(f'{name}{{reason="{_label_value(reason)}"}} {counts[reason]}')


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value))
