"""`sidemesh demo` refuses clearly, creating nothing, where it cannot run; `--json` prints one
object of the checks on stdout, the narration on stderr."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from sidemesh.cli.demo import EXIT_FAILED, EXIT_UNAVAILABLE, demo
from sidemesh.demo import runner
from sidemesh.demo.runner import StepOutcome


def test_a_host_that_cannot_run_it_gets_the_reasons_and_nothing_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "environment_problems", lambda: ["run as root (uid 0)"])
    state_dir = tmp_path / "state"
    result = CliRunner().invoke(demo, ["--state-dir", str(state_dir)])
    assert result.exit_code == EXIT_UNAVAILABLE
    assert "cannot run here" in result.output
    assert "run as root" in result.output
    assert not state_dir.exists()


def test_a_running_runtime_is_not_taken_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "environment_problems", list)
    (tmp_path / "state.json").write_text("{}")
    result = CliRunner().invoke(demo, ["--state-dir", str(tmp_path)])
    assert result.exit_code == EXIT_UNAVAILABLE
    assert "already running" in result.output


def _fake_walk(failed: int | None) -> Any:
    def run_demo(settings: runner.DemoSettings, console: Console) -> list[StepOutcome]:
        console.print("Step 1: narrated")
        return [
            StepOutcome(1, "one", ok=True, facts={"pods": []}),
            StepOutcome(2, "two", ok=failed != 2, error="broke" if failed == 2 else ""),
        ]

    return run_demo


@pytest.mark.parametrize(("failed", "exit_code"), [(None, 0), (2, EXIT_FAILED)])
def test_json_is_one_object_on_stdout_and_the_narration_goes_to_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failed: int | None, exit_code: int
) -> None:
    monkeypatch.setattr(runner, "environment_problems", list)
    monkeypatch.setattr(runner, "run_demo", _fake_walk(failed))
    result = CliRunner().invoke(demo, ["--json", "--state-dir", str(tmp_path / "state")])
    assert result.exit_code == exit_code, result.output
    report = json.loads(result.stdout)  # the whole of stdout: one object
    assert "Step 1: narrated" in result.stderr and "narrated" not in result.stdout
    assert report["ok"] is (failed is None)
    assert report["control_plane_ready"] is True
    assert report["ready_1_of_1_before_injection"] is (failed is None)
    for name in ("authz_denied_status", "authz_allowed_status", "requests_total_source",
                 "requests_total_destination"):  # fmt: skip
        assert name in report and report[name] is None  # never got there
    assert [s["step"] for s in report["steps"]] == [1, 2]
