"""`sidemesh discovery` refuses bad configuration before binding anything."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from webhook_testkit import Authority

from sidemesh.cli.discovery import discovery


def tls_args(tmp_path: Path) -> list[str]:
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    Authority.create().issue(cert_file, key_file)
    return ["--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file)]


def test_malformed_mesh_config_exits_2_naming_the_file(tmp_path: Path) -> None:
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text("defaultConfig: [unclosed\n")
    result = CliRunner().invoke(discovery, [*tls_args(tmp_path), "--mesh-config", str(mesh)])
    assert result.exit_code == 2
    assert str(mesh) in result.output


def test_unknown_mesh_config_field_exits_2_naming_the_file(tmp_path: Path) -> None:
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text("trustDomian: example.org\n")
    result = CliRunner().invoke(discovery, [*tls_args(tmp_path), "--mesh-config", str(mesh)])
    assert result.exit_code == 2
    assert str(mesh) in result.output


def test_missing_values_file_exits_2(tmp_path: Path) -> None:
    values = tmp_path / "absent.yaml"
    result = CliRunner().invoke(discovery, [*tls_args(tmp_path), "--values", str(values)])
    assert result.exit_code == 2
    assert str(values) in result.output


def test_bad_tls_pair_exits_2_naming_the_files(tmp_path: Path) -> None:
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_file.write_text("not a certificate\n")
    key_file.write_text("not a key\n")
    args = ["--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file)]
    result = CliRunner().invoke(discovery, args)
    assert result.exit_code == 2
    assert str(cert_file) in result.output
    assert "not a key" not in result.output


def test_tls_files_are_required() -> None:
    result = CliRunner().invoke(discovery, [])
    assert result.exit_code == 2
    assert "--tls-cert-file" in result.output
