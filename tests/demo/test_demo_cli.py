"""`sidemesh demo` refuses clearly, creating nothing, where it cannot run."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sidemesh.cli.demo import EXIT_UNAVAILABLE, demo
from sidemesh.demo import runner


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
