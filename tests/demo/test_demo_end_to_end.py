"""`sidemesh demo` for real (root): every step's outcome, checked from the runtime's state as
it was when the step ended, and nothing left behind afterwards."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from sidemesh.demo import script
from sidemesh.demo.runner import Demo, DemoSettings, StepOutcome, leftovers, run_demo
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
    assert [(o.number, o.ok, o.error) for o in outcomes] == [(n, True, "") for n in range(1, 7)]


def test_it_ends_with_what_it_showed(
    walk: tuple[list[StepOutcome], dict[int, State]], console: Console
) -> None:
    assert isinstance(console.file, io.StringIO)
    _, _, summary = console.file.getvalue().rpartition("What this run showed")
    checks = [line for line in summary.splitlines() if line.strip()][1:]
    assert len(checks) == 7 and all(line.startswith("✓ ") for line in checks), summary
    assert "the backend saw its caller as spiffe://cluster.local/ns/demo/" in summary


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
