"""Without root or the tools, the runtime says what it needs and creates nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from sidemesh.cli.local import local
from sidemesh.local import preflight


def test_not_root_is_explained_and_nothing_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sidemesh.local.preflight.os.geteuid", lambda: 1000)
    state_dir = tmp_path / "state"
    manifest = tmp_path / "app.yaml"
    manifest.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n")
    result = CliRunner().invoke(
        local, ["--state-dir", str(state_dir), "apply", "-f", str(manifest)]
    )
    assert result.exit_code == 1
    assert "sidemesh local cannot run here" in result.output
    assert "must run as root" in result.output and "sudo" in result.output
    assert not state_dir.exists()


def test_missing_tools_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    real_which = shutil.which
    monkeypatch.setattr(
        "sidemesh.local.preflight.shutil.which",
        lambda tool: None if tool.startswith("iptables") else real_which(tool),
    )
    problems = preflight.missing_requirements()
    assert any("`iptables` is not in PATH (install the iptables package)" in p for p in problems)
    assert any("`iptables-restore`" in p for p in problems)


def test_every_command_checks_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sidemesh.local.preflight.os.geteuid", lambda: 1000)
    for args in (
        ["get", "pods"],
        ["down"],
        ["label", "namespace", "demo", "a=b"],
        ["control-plane", "start", "--revision", "x"],
    ):
        result = CliRunner().invoke(local, ["--state-dir", str(tmp_path / "s"), *args])
        assert result.exit_code == 1 and "must run as root" in result.output, args
    assert not (tmp_path / "s").exists()
