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
    assert "--kube, which creates them" in result.output


def test_with_kube_the_serving_files_are_discoverys_own(tmp_path: Path) -> None:
    """--kube writes the pair itself: no flags needed, and the default place is private."""
    from sidemesh.cli.discovery import _serving_files

    cert_file, key_file = _serving_files(None, None, kube=True)
    assert cert_file.parent == key_file.parent and cert_file.name == "tls.crt"
    assert cert_file.parent.stat().st_mode & 0o777 == 0o700
    cert_file.parent.rmdir()
    given = (tmp_path / "c", tmp_path / "k")
    assert _serving_files(*given, kube=True) == given


def test_half_a_pair_is_refused_even_with_kube(tmp_path: Path) -> None:
    result = CliRunner().invoke(discovery, ["--kube", "--tls-cert-file", str(tmp_path / "c")])
    assert result.exit_code == 2
    assert "--tls-cert-file and --tls-key-file are required together" in result.output


def test_kubeconfig_needs_kube(tmp_path: Path) -> None:
    result = CliRunner().invoke(discovery, [*tls_args(tmp_path), "--kubeconfig", "/dev/null"])
    assert result.exit_code == 2
    assert "--kubeconfig needs --kube" in result.output
