"""`sidemesh dashboard`: what it refuses before it serves anything."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from sidemesh.cli.main import cli


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["dashboard", *args])
    return result.exit_code, result.output


def test_listed_in_help() -> None:
    assert "dashboard" in CliRunner().invoke(cli, ["--help"]).output


def test_a_non_loopback_address_must_be_meant() -> None:
    code, output = run("--address", "0.0.0.0")
    assert code == 2 and "--allow-remote" in output


def test_a_window_that_is_not_a_duration_is_refused() -> None:
    code, output = run("--window", "1m]) or vector(1")
    assert code == 1 and "rate window must be a Prometheus duration" in output


def test_a_prometheus_url_with_credentials_is_refused() -> None:
    code, output = run("--prometheus", "http://admin:secret@127.0.0.1:9090")
    assert code == 1 and "must not carry credentials" in output and "secret" not in output


def test_local_without_its_prometheus_says_how_to_start_it(tmp_path: Path) -> None:
    code, output = run("--local", "--state-dir", str(tmp_path))
    assert code == 1 and "sidemesh local prometheus start" in output
