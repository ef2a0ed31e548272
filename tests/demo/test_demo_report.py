"""`sidemesh demo --json`'s object: every check named, true/false/null as the steps went, and
what a failed step saw before it failed."""

from __future__ import annotations

import json
from typing import Any

from sidemesh.demo import script
from sidemesh.demo.demo_report import StepOutcome, checks

EDGE = {
    "source": "demo/client",
    "destination": "demo/backend",
    "requests_source": 2,
    "requests_destination": 2,
    "success_rate": 1.0,
    "mutual_tls": True,
}
FACTS: dict[int, dict[str, Any]] = {
    script.STEP_CONTROL_PLANE: {"pods": []},
    script.STEP_APP: {"pods": []},
    script.STEP_INJECT: {"pods": [], "restart_to_ready_s": 6.0, "sidecar_rss_bytes": 100},
    script.STEP_MTLS: {
        "caller": "spiffe://cluster.local/ns/demo/sa/frontend",
        "plaintext_before_strict": True,
        "plaintext_refusal": "ConnectionResetError: reset",
    },
    script.STEP_UPGRADE: {"restart_to_ready_s": 9.0, "connected": {"old": 0, "new": 4}},
    script.STEP_AUTHZ: {
        "denied_status": 403,
        "denied_body": "RBAC: access denied",
        "allowed_status": 200,
        "allowed_caller": "spiffe://cluster.local/ns/demo/sa/client",
    },
    script.STEP_SIGNALS: {
        "edge": "demo/client -> demo/backend",
        "requests_sent": 2,
        "requests_total_source": 2,
        "requests_total_destination": 2,
        "edges": [EDGE],
    },
    script.STEP_CLEANUP: {"leftovers": []},
}


def outcomes(last: int, failed: int | None = None) -> list[StepOutcome]:
    return [
        StepOutcome(
            n,
            f"step {n}",
            ok=n != failed,
            facts=dict(FACTS[n]),
            error="it broke" if n == failed else "",
        )
        for n in range(1, last + 1)
    ]


def test_a_passing_run_reports_every_check() -> None:
    report = checks(outcomes(script.STEP_CLEANUP), second_revision="new")
    assert json.loads(json.dumps(report)) == report  # plain JSON
    assert report == {
        "ok": True,
        "failed_step": None,
        "control_plane_ready": True,
        "ready_1_of_1_before_injection": True,
        "ready_2_of_2": True,
        "restart_to_ready_s": 6.0,
        "sidecar_rss_bytes": 100,
        "mtls": True,
        "mtls_caller": "spiffe://cluster.local/ns/demo/sa/frontend",
        "plaintext_accepted_before_strict": True,
        "strict_refused_plaintext": True,
        "plaintext_refusal": "ConnectionResetError: reset",
        "upgrade_ready_2_of_2": True,
        "upgrade_restart_to_ready_s": 9.0,
        "upgrade_connected_sidecars": 4,
        "authz_denied_status": 403,
        "authz_denied_body": "RBAC: access denied",
        "authz_allowed_status": 200,
        "authz_allowed_caller": "spiffe://cluster.local/ns/demo/sa/client",
        "requests_edge": "demo/client -> demo/backend",
        "requests_sent": 2,
        "requests_total_source": 2,
        "requests_total_destination": 2,
        "golden_signals": [EDGE],
        "cleaned_up": True,
        "steps": [{"step": n, "title": f"step {n}", "ok": True, "error": ""} for n in range(1, 9)],
    }


def test_a_failed_step_is_false_with_what_it_saw_and_later_checks_are_null() -> None:
    steps = outcomes(script.STEP_SIGNALS, failed=script.STEP_SIGNALS)
    steps[-1].facts["requests_total_destination"] = 1  # what it saw, then failed on
    report = checks(steps, second_revision="new")
    assert report["ok"] is False
    assert report["failed_step"] == "step 7: it broke"
    assert report["authz_denied_status"] == 403
    assert (report["requests_total_source"], report["requests_total_destination"]) == (2, 1)
    assert report["cleaned_up"] is None


def test_a_run_that_stopped_early_reports_null_for_what_it_never_checked() -> None:
    report = checks(outcomes(script.STEP_MTLS, failed=script.STEP_MTLS), second_revision="new")
    assert report["mtls"] is False and report["strict_refused_plaintext"] is False
    assert report["upgrade_ready_2_of_2"] is None
    assert report["authz_denied_status"] is None and report["requests_total_source"] is None
    assert checks([], second_revision="new")["ok"] is False  # nothing ran
