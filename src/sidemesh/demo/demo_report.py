"""`sidemesh demo --json`: one JSON object of every check the demo made (pure).

Each check is named for what it establishes. A check's value is what the step saw: a boolean
for a yes/no check (true: the step that makes it passed, false: it failed, null: the demo
never got there), or the measured value (null where not measured). `ok` is the whole run's
verdict and `failed_step` the first failure's message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sidemesh.demo import script


@dataclass
class StepOutcome:
    """One step of the walk: its facts are filled in as it goes, so a failed step still
    reports what it saw."""

    number: int
    title: str
    ok: bool
    facts: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def checks(results: Sequence[StepOutcome], *, second_revision: str) -> dict[str, Any]:
    by_number = {r.number: r for r in results}

    def passed(number: int) -> bool | None:
        result = by_number.get(number)
        return None if result is None else result.ok

    def fact(number: int, name: str) -> Any:
        result = by_number.get(number)
        return None if result is None else result.facts.get(name)

    caller = fact(script.STEP_MTLS, "caller")
    connected = fact(script.STEP_UPGRADE, "connected")
    edges = fact(script.STEP_SIGNALS, "edges")
    failed = next((r for r in results if not r.ok), None)
    return {
        "ok": bool(results) and failed is None,
        "failed_step": None if failed is None else f"step {failed.number}: {failed.error}",
        "control_plane_ready": passed(script.STEP_CONTROL_PLANE),
        "ready_1_of_1_before_injection": passed(script.STEP_APP),
        "ready_2_of_2": passed(script.STEP_INJECT),
        "restart_to_ready_s": fact(script.STEP_INJECT, "restart_to_ready_s"),
        "sidecar_rss_bytes": fact(script.STEP_INJECT, "sidecar_rss_bytes"),
        "mtls": None if caller is None else bool(passed(script.STEP_MTLS)),
        "mtls_caller": caller,
        "plaintext_accepted_before_strict": fact(script.STEP_MTLS, "plaintext_before_strict"),
        "strict_refused_plaintext": (
            None
            if fact(script.STEP_MTLS, "plaintext_refusal") is None
            else passed(script.STEP_MTLS)
        ),
        "plaintext_refusal": fact(script.STEP_MTLS, "plaintext_refusal"),
        "upgrade_ready_2_of_2": passed(script.STEP_UPGRADE),
        "upgrade_restart_to_ready_s": fact(script.STEP_UPGRADE, "restart_to_ready_s"),
        "upgrade_connected_sidecars": (
            None if connected is None else connected.get(second_revision)
        ),
        "authz_denied_status": fact(script.STEP_AUTHZ, "denied_status"),
        "authz_denied_body": fact(script.STEP_AUTHZ, "denied_body"),
        "authz_allowed_status": fact(script.STEP_AUTHZ, "allowed_status"),
        "authz_allowed_caller": fact(script.STEP_AUTHZ, "allowed_caller"),
        "requests_edge": fact(script.STEP_SIGNALS, "edge"),
        "requests_sent": fact(script.STEP_SIGNALS, "requests_sent"),
        "requests_total_source": fact(script.STEP_SIGNALS, "requests_total_source"),
        "requests_total_destination": fact(script.STEP_SIGNALS, "requests_total_destination"),
        "golden_signals": edges,
        "cleaned_up": passed(script.STEP_CLEANUP),
        "steps": [
            {"step": r.number, "title": r.title, "ok": r.ok, "error": r.error} for r in results
        ],
    }
