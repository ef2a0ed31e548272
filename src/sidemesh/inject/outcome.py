"""What one admission of one pod came to: injected (with a JSON patch), skipped, or denied.

The same object feeds the webhook response, the CLI, logs and metrics, so every outcome
carries a stable `code` (for metric labels and tests) and a `reason` a user can act on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from sidemesh.inject.warnings import InjectionWarning

OutcomeKind = Literal["injected", "skipped", "denied"]


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    code: str
    reason: str
    revision: str
    patch: bytes | None = None  # RFC 6902 JSON Patch, UTF-8 JSON; only when injected
    pod: dict[str, Any] | None = field(default=None, repr=False)  # the injected pod
    warnings: tuple[InjectionWarning, ...] = ()
    # The patch as AdmissionReview carries it; computed once, since outcomes are memoised.
    patch_base64: str | None = field(default=None, repr=False)

    @property
    def allowed(self) -> bool:
        return self.kind != "denied"
