"""Validation webhook metrics with Istio's names (`galley_validation_*`, which istiod still
exports), written by the shared text-format writer. Labels come from the fixed set of result
codes in `webhook.validation`, never from client input."""

from __future__ import annotations

from sidemesh.api.prometheus_text import Family, Sample, labelled, render
from sidemesh.webhook.validation import VerdictKind


class ValidationMetrics:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: dict[str, int] = {}  # reason -> count
        self.http_errors = 0

    def record(self, kind: VerdictKind, code: str) -> None:
        """Count one request to `/validate` and how it ended."""
        if kind == "allowed":
            self.passed += 1
        elif kind == "denied":
            self.failed[code] = self.failed.get(code, 0) + 1
        else:
            self.http_errors += 1

    def families(self) -> list[Family]:
        return [
            Family(
                "galley_validation_passed",
                "counter",
                "Resource is valid.",
                [Sample(self.passed)],
            ),
            Family(
                "galley_validation_failed",
                "counter",
                "Resource validation failed, by reason.",
                labelled("reason", self.failed),
            ),
            Family(
                "galley_validation_http_error",
                "counter",
                "Requests that were not AdmissionReviews the webhook could answer.",
                [Sample(self.http_errors)],
            ),
        ]

    def render(self) -> bytes:
        return render(self.families()).encode()
