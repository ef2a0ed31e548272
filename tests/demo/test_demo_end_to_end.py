"""`sidemesh demo` for real (root): every step's outcome, checked from the runtime's state as
it was when the step ended, and nothing left behind afterwards."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from sidemesh.demo import demo_authz, script
from sidemesh.demo.runner import Demo, DemoSettings, StepOutcome, leftovers, report, run_demo
from sidemesh.local.model import State
from sidemesh.local.preflight import missing_requirements

MISSING = missing_requirements()
pytestmark = pytest.mark.skipif(
    bool(MISSING), reason="the demo needs a real host: " + "; ".join(MISSING)
)
MANIFEST = Path(__file__).parents[2] / "examples" / "demo" / "demo.yaml"


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture(scope="module")
def console() -> Console:
    return Console(file=io.StringIO(), width=200)


@pytest.fixture(scope="module")
def walk(
    tmp_path_factory: pytest.TempPathFactory, console: Console
) -> tuple[list[StepOutcome], dict[int, State]]:
    state_dir = tmp_path_factory.mktemp("demo") / "state"
    states: dict[int, State] = {}

    def observe(demo: Demo, outcome: StepOutcome) -> None:
        if demo.store.exists():
            states[outcome.number] = demo.state()

    outcomes = run_demo(
        DemoSettings(state_dir=state_dir, manifest=MANIFEST, wait_seconds=120.0), console, observe
    )
    assert leftovers(state_dir) == []
    assert processes_mentioning(str(state_dir)) == []
    return outcomes, states


def test_every_step_succeeds(walk: tuple[list[StepOutcome], dict[int, State]]) -> None:
    outcomes, _ = walk
    assert [(o.number, o.ok, o.error) for o in outcomes] == [(n, True, "") for n in range(1, 9)]


def test_it_ends_with_what_it_showed(
    walk: tuple[list[StepOutcome], dict[int, State]], console: Console
) -> None:
    assert isinstance(console.file, io.StringIO)
    _, _, summary = console.file.getvalue().rpartition("What this run showed")
    checks, _, signals = summary.partition("Golden signals")
    lines = [line for line in checks.splitlines() if line.strip()][1:]
    assert len(lines) == 9 and all(line.startswith("✓ ") for line in lines), summary
    assert "the backend saw its caller as spiffe://cluster.local/ns/demo/" in summary
    # the demo ends with the golden signals: a row per edge, the demo's own among them
    rows = [line.split("│") for line in signals.splitlines() if "│" in line]
    edges = {(row[1].strip(), row[2].strip()) for row in rows if len(row) > 3}
    assert ("demo/client", "demo/backend") in edges, signals
    assert ("demo/guest", "demo/backend") in edges, signals


def test_the_control_plane_pod_carries_its_revision(
    walk: tuple[list[StepOutcome], dict[int, State]],
) -> None:
    _, states = walk
    pods = script.control_plane_pods(states[1], script.FIRST_REVISION)
    assert len(pods) == 1
    assert pods[0].labels["istio"] == "istiod"
    assert pods[0].namespace == "istio-system"
    assert script.fully_ready(pods[0])


def test_without_a_label_pods_run_alone(walk: tuple[list[StepOutcome], dict[int, State]]) -> None:
    _, states = walk
    pods = script.live_pods(states[2], script.NAMESPACE)
    assert len(pods) == 4
    assert {script.ready_column(p) for p in pods} == {"1/1"}
    assert not any(script.has_sidecar(p) for p in pods)


def test_labelled_and_restarted_pods_are_2_of_2(
    walk: tuple[list[StepOutcome], dict[int, State]],
) -> None:
    outcomes, states = walk
    pods = script.live_pods(states[3], script.NAMESPACE)
    assert len(pods) == 4
    assert {script.ready_column(p) for p in pods} == {"2/2"}
    assert {script.sidecar_revision(p) for p in pods} == {script.FIRST_REVISION}
    assert outcomes[2].facts["sidecar_rss_bytes"] > 0


def test_the_backend_sees_the_callers_mesh_identity(
    walk: tuple[list[StepOutcome], dict[int, State]],
) -> None:
    outcomes, _ = walk
    assert outcomes[3].facts["caller"] == "spiffe://cluster.local/ns/demo/sa/frontend"
    assert outcomes[3].facts["caller_under_strict"] == outcomes[3].facts["caller"]


def test_strict_refuses_plaintext_from_outside_the_mesh(
    walk: tuple[list[StepOutcome], dict[int, State]],
) -> None:
    outcomes, states = walk
    assert outcomes[3].facts["plaintext_before_strict"] is True
    assert outcomes[3].facts["plaintext_refusal"]
    assert list(states[4].peerauthentications) == ["demo/default"]


def test_after_the_upgrade_every_pod_runs_the_new_revision(
    walk: tuple[list[StepOutcome], dict[int, State]],
) -> None:
    outcomes, states = walk
    pods = script.live_pods(states[5], script.NAMESPACE)
    assert len(pods) == 4
    assert {script.sidecar_revision(p) for p in pods} == {script.SECOND_REVISION}
    assert {script.ready_column(p) for p in pods} == {"2/2"}
    assert outcomes[4].facts["connected"] == {script.FIRST_REVISION: 0, script.SECOND_REVISION: 4}
    assert script.FIRST_REVISION not in states[5].control_planes  # stopped
    assert outcomes[4].facts["caller_after_upgrade"]


def test_authorization_refuses_by_identity_and_allows_the_client(
    walk: tuple[list[StepOutcome], dict[int, State]],
) -> None:
    outcomes, states = walk
    facts = outcomes[script.STEP_AUTHZ - 1].facts
    assert facts["denied_from"] == "spiffe://cluster.local/ns/demo/sa/guest"
    assert (facts["denied_status"], facts["denied_body"]) == (403, "RBAC: access denied")
    assert facts["allowed_status"] == 200
    assert facts["allowed_caller"] == "spiffe://cluster.local/ns/demo/sa/client"
    assert list(states[script.STEP_AUTHZ].authorizationpolicies) == [
        f"demo/{demo_authz.POLICY_NAME}"
    ]


def test_json_reports_every_check_with_exact_request_totals(
    walk: tuple[list[StepOutcome], dict[int, State]],
) -> None:
    outcomes, _ = walk
    checks = json.loads(json.dumps(report(outcomes, DemoSettings(Path("unused"), MANIFEST))))
    assert checks["ok"] is True and checks["failed_step"] is None
    assert (checks["authz_denied_status"], checks["authz_allowed_status"]) == (403, 200)
    assert checks["requests_edge"] == "demo/client -> demo/backend"
    # exactly the requests the demo sent from the client to the backend, on both sides
    assert checks["requests_sent"] >= 1
    assert checks["requests_total_source"] == checks["requests_sent"]
    assert checks["requests_total_destination"] == checks["requests_sent"]
    for name in ("control_plane_ready", "ready_1_of_1_before_injection", "ready_2_of_2", "mtls",
                 "strict_refused_plaintext", "upgrade_ready_2_of_2", "cleaned_up"):  # fmt: skip
        assert checks[name] is True, name
    assert checks["upgrade_connected_sidecars"] == 4
    [edge] = [e for e in checks["golden_signals"]
              if (e["source"], e["destination"]) == ("demo/client", "demo/backend")]  # fmt: skip
    assert edge["success_rate"] == 1.0 and edge["mutual_tls"] is True
    [denied] = [e for e in checks["golden_signals"] if e["source"] == "demo/guest"]
    assert denied["requests_destination"] >= 1 and denied["mutual_tls"] is True
