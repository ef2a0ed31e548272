"""Injection metrics, written by the shared text-format writer (`sidemesh.api.prometheus_text`).

Istio's metric names, so existing dashboards and alerts keep working. One writer (the event
loop): updates are plain integer and float additions with no await in between, which is
atomic with respect to the single event loop that serves requests.

Skips and failures carry a `reason` label with the outcome code. The codes come from a fixed
set (the engine's outcome codes and the webhook's own request-error codes), never from
client input, so the label cannot grow without bound.
"""

from __future__ import annotations

from typing import Final, Literal

from sidemesh.api.prometheus_text import Family, Histogram, Sample, labelled, render

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
        self.time = Histogram(buckets)

    def record(self, outcome: OutcomeClass, reason: str, seconds: float) -> None:
        """Count one request to the injection endpoint and how it ended."""
        self.requests += 1
        if outcome == "success":
            self.successes += 1
        elif outcome == "skip":
            self.skips[reason] = self.skips.get(reason, 0) + 1
        else:
            self.failures[reason] = self.failures.get(reason, 0) + 1
        self.time.observe(seconds)

    def families(self) -> list[Family]:
        return [
            Family(
                "sidecar_injection_requests_total",
                "counter",
                "Total injection requests.",
                [Sample(self.requests)],
            ),
            Family(
                "sidecar_injection_success_total",
                "counter",
                "Total successful injections.",
                [Sample(self.successes)],
            ),
            Family(
                "sidecar_injection_skip_total",
                "counter",
                "Total skipped injections, by reason.",
                labelled("reason", self.skips),
            ),
            Family(
                "sidecar_injection_failure_total",
                "counter",
                "Total failed injections (denied pods and bad requests), by reason.",
                labelled("reason", self.failures),
            ),
            self.time.family(
                "sidecar_injection_time_seconds", "Time taken to answer an injection request."
            ),
        ]

    def render(self) -> bytes:
        """The exposition text (`text/plain; version=0.0.4`)."""
        return render(self.families()).encode()
