"""`sidemesh demo --kube --json`: the local demo's object of checks, from the kube walk's steps
(the keys of what the kube walk does not do left out), one object on stdout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from sidemesh.api import security
from sidemesh.cli.demo import EXIT_FAILED, demo
from sidemesh.demo import demo_authz, kube_report, kube_runner, runner
from sidemesh.demo.kube_step import KubeOutcome
from sidemesh.kube import testbed
from sidemesh.xds import rbac

EDGE = {
    "source": "demo/client",
    "destination": "demo/backend",
    "requests_source": 3,
    "requests_destination": 3,
    "success_rate": 1.0,
    "mutual_tls": True,
}
FACTS: dict[int, dict[str, Any]] = {
    5: {"caller": "spiffe://cluster.local/ns/demo/sa/frontend"},
    6: {
        "denied_status": 403,
        "denied_body": "RBAC: access denied",
        "allowed_status": 200,
        "allowed_caller": "spiffe://cluster.local/ns/demo/sa/client",
    },
    7: {
        "edge": "demo/client -> demo/backend",
        "requests_sent": 3,
        "requests_total_source": 3,
        "requests_total_destination": 3,
        "edges": [EDGE],
    },
}


def walked(last: int, failed: int | None = None) -> list[KubeOutcome]:
    return [
        KubeOutcome(
            n,
            f"step {n}",
            ok=n != failed,
            detail="it broke" if n == failed else "fine",
            facts=dict(FACTS.get(n, {})),
        )
        for n in range(1, last + 1)
    ]


def test_a_whole_walk_reports_the_local_demos_checks() -> None:
    report = kube_report.checks(walked(7), cleaned_up=True)
    assert report["ok"] is True and report["failed_step"] is None
    assert report["kube"] is True and report["node_ready"] is True
    assert report["control_plane_ready"] is True
    assert report["ready_1_of_1_before_injection"] is True
    assert report["ready_2_of_2"] is True
    assert report["mtls"] is True
    assert report["mtls_caller"] == "spiffe://cluster.local/ns/demo/sa/frontend"
    assert (report["authz_denied_status"], report["authz_denied_body"]) == (
        403,
        "RBAC: access denied",
    )
    assert report["authz_allowed_status"] == 200
    assert report["requests_total_source"] == report["requests_total_destination"] == 3
    assert report["golden_signals"] == [EDGE]
    assert report["cleaned_up"] is True
    assert [s["step"] for s in report["steps"]] == list(range(1, 8))
    for key in kube_report.NOT_WALKED:
        assert key not in report  # absent, not null: the kube walk has no such step


def test_a_failed_step_is_named_by_its_kube_number_and_later_checks_are_null() -> None:
    report = kube_report.checks(walked(6, failed=6), cleaned_up=True)
    assert report["ok"] is False
    assert report["failed_step"] == "step 6: it broke"
    assert report["mtls"] is True
    assert report["authz_denied_status"] == 403  # what the failed step saw before it failed
    assert report["requests_total_source"] is None  # never got there
    assert report["steps"][-1] == {"step": 6, "title": "step 6", "ok": False, "error": "it broke"}


def test_a_walk_that_stopped_at_the_node_knows_nothing_else() -> None:
    report = kube_report.checks(walked(1, failed=1), cleaned_up=False)
    assert report["node_ready"] is False
    assert report["control_plane_ready"] is None and report["mtls"] is None
    assert report["cleaned_up"] is False


@pytest.mark.parametrize(("failed", "exit_code"), [(None, 0), (6, EXIT_FAILED)])
def test_json_kube_is_one_object_on_stdout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failed: int | None, exit_code: int
) -> None:
    def run_kube_demo(settings: kube_runner.KubeDemoSettings, console: Console) -> Any:
        console.print("Step 1: narrated")
        return walked(7 if failed is None else failed, failed)

    monkeypatch.setattr(runner, "environment_problems", list)
    monkeypatch.setattr(testbed, "find_assets", lambda: tmp_path)
    monkeypatch.setattr(kube_runner, "run_kube_demo", run_kube_demo)
    state_dir = tmp_path / "state"
    result = CliRunner().invoke(demo, ["--json", "--kube", "--state-dir", str(state_dir)])
    assert result.exit_code == exit_code, result.output
    report = json.loads(result.stdout)  # the whole of stdout: one object
    assert "Step 1: narrated" in result.stderr and "narrated" not in result.stdout
    assert report["ok"] is (failed is None)
    assert report["kube"] is True
    assert report["cleaned_up"] is True  # nothing of the node left


def test_the_rule_the_kube_demo_waits_for_is_the_one_the_control_plane_writes() -> None:
    resource = security.validate(demo_authz.backend_policy())
    [rule] = rbac.translate([resource], tcp=False)
    assert rule.name == demo_authz.rule_name() == "ns[demo]-policy[backend-callers]-rule[0]"
