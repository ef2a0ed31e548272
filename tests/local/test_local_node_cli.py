"""`sidemesh local node`'s options: a malformed one is refused before anything is touched,
saying what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sidemesh.cli.main import cli


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--host-service", "istiod:15012", "NAMESPACE/NAME:PORT=HOST:PORT"),
        ("--expose", "istio-system/istiod:443", "HOST:PORT=NAMESPACE/NAME:PORT"),
    ],
)
def test_a_malformed_option_is_refused(
    tmp_path: Path, option: str, value: str, expected: str
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    state = tmp_path / "state"
    result = CliRunner().invoke(
        cli,
        ["local", "--state-dir", str(state), "node", "--kubeconfig", str(kubeconfig),
         option, value],
    )  # fmt: skip
    assert result.exit_code == 1
    assert expected in result.output
    assert not state.exists()
