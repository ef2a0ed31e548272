"""Golden warnings: each tests/data/warnings/<case>.yaml is a pod that injects but will not
behave as its owner expects (or, for the `clean`/`-native`/`-held` cases, one that will);
<case>.warnings.txt holds the lines the webhook returns in AdmissionResponse.warnings, in
order, one per line.

Every door must say the same: the webhook (`Injector.admit`), kube-inject on stderr and
check-inject's JSON. Regenerate with SIDEMESH_UPDATE_GOLDEN=1 and review the text as a user
would read it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from golden_files import update_golden, updating
from sidemesh.cli.check_inject import check_inject
from sidemesh.cli.kube_inject import kube_inject
from sidemesh.inject.engine import Injector
from sidemesh.inject.warnings import TABLE

DATA = Path(__file__).resolve().parent.parent / "data" / "warnings"
CASES = sorted(p.name[: -len(".yaml")] for p in DATA.glob("*.yaml"))
INJECTOR = Injector()


def _pod(case: str) -> dict[str, Any]:
    pod = yaml.load((DATA / f"{case}.yaml").read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    assert isinstance(pod, dict)
    return pod


def _expected(case: str) -> list[str]:
    return (DATA / f"{case}.warnings.txt").read_text(encoding="utf-8").splitlines()


def _admitted_lines(case: str) -> list[str]:
    pod = _pod(case)
    outcome = INJECTOR.admit(pod, pod["metadata"]["namespace"])
    assert outcome.kind == "injected", outcome.reason
    return [str(w) for w in outcome.warnings]


@pytest.mark.parametrize("case", CASES)
def test_webhook_warnings_match_golden(case: str) -> None:
    actual = _admitted_lines(case)
    if updating():
        update_golden(DATA / f"{case}.warnings.txt", "".join(f"{line}\n" for line in actual))
    assert actual == _expected(case)


@pytest.mark.parametrize("case", CASES)
def test_kube_inject_prints_the_same_warnings(case: str) -> None:
    result = CliRunner().invoke(kube_inject, ["-f", str(DATA / f"{case}.yaml")])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [f"warning: Pod/{case}: {w}" for w in _expected(case)]


@pytest.mark.parametrize("case", CASES)
def test_check_inject_json_carries_code_and_message(case: str) -> None:
    result = CliRunner().invoke(
        check_inject,
        ["-f", str(DATA / f"{case}.yaml"), "--namespace-labels", "istio-injection=enabled",
         "-o", "json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["injected"] is True
    expected = [dict(zip(("code", "message"), w.split(": ", 1), strict=True))
                for w in _expected(case)]  # fmt: skip
    # check-inject also sees the webhook selectors: an annotation-only opt-in cannot work.
    selection = [{"code": "SM1003", "message": w["message"]}
                 for w in row["warnings"] if w["code"] == "SM1003"]  # fmt: skip
    assert row["warnings"] == selection + expected
    assert bool(selection) == (case == "inject-annotation")
    printed = [f"{w['code']}: {w['message']}" for w in row["warnings"]]
    assert result.stderr.splitlines() == [f"warning: Pod/{case}: {line}" for line in printed]


def test_check_inject_table_leaves_warnings_to_stderr() -> None:
    result = CliRunner().invoke(
        check_inject,
        ["-f", str(DATA / "reserved-port.yaml"), "--namespace-labels", "istio-injection=enabled"],
    )
    assert result.exit_code == 0, result.output
    assert "SM1101" not in result.stdout and "Pod/reserved-port" in result.stdout
    assert result.stderr.splitlines() == [
        f"warning: Pod/reserved-port: {line}" for line in _expected("reserved-port")
    ]


def test_each_case_says_what_its_header_promises() -> None:
    """The first line of every input names the codes it expects (or says "Nothing")."""
    for case in CASES:
        header = (DATA / f"{case}.yaml").read_text(encoding="utf-8").splitlines()[0]
        codes = sorted({line.split(":", 1)[0] for line in _expected(case)})
        if header.startswith("# Nothing"):
            assert codes == [], case
        else:
            assert header.startswith("# " + ", ".join(codes) + ":"), (case, codes)


def test_every_pod_level_code_has_a_golden_case() -> None:
    covered = {line.split(":", 1)[0] for case in CASES for line in _expected(case)}
    pod_level = {kind.code for kind in TABLE if kind.code.startswith("SM11")}
    assert pod_level <= covered
