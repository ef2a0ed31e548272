"""Golden corpus: `sidemesh kube-inject` on each tests/data/inject/<case>.yaml must print
exactly <case>.injected.yaml; injecting that output again must change nothing; and for Pods
the webhook path (`Injector.admit` and its JSON patch) must produce the same pod.

Regenerate with SIDEMESH_UPDATE_GOLDEN=1 and review every changed file against
/work/shared/ISTIO-COMPAT.md before keeping it.
"""

from __future__ import annotations

import difflib
import json

import jsonpatch
import pytest
from golden_support import UPDATE, GoldenCase, golden_cases, load_documents, run_kube_inject

from golden_files import update_golden

CASES = golden_cases()


def _check_text(case: GoldenCase, actual: str) -> None:
    if UPDATE:
        update_golden(case.expected, actual)
    assert case.expected.exists(), f"no {case.expected.name}: run with SIDEMESH_UPDATE_GOLDEN=1"
    expected = case.expected.read_text(encoding="utf-8")
    if actual != expected:
        diff = "\n".join(
            difflib.unified_diff(
                expected.splitlines(), actual.splitlines(),
                f"{case.name}.injected.yaml", "kube-inject output", lineterm="",
            )
        )  # fmt: skip
        pytest.fail(f"kube-inject output differs from the golden file:\n{diff}")


def test_corpus_is_not_empty() -> None:
    assert len(CASES) >= 50


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_kube_inject_matches_golden(case: GoldenCase) -> None:
    result = run_kube_inject(case)
    assert result.exit_code == 0, result.output
    _check_text(case, result.stdout)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_reinjecting_golden_output_changes_nothing(case: GoldenCase) -> None:
    if not case.expected.exists():
        pytest.skip("golden file not generated yet")
    result = run_kube_inject(case, source=case.expected)
    assert result.exit_code == 0, result.output
    assert load_documents(result.stdout) == case.expected_documents()


def test_already_injected_input_is_left_as_it_is() -> None:
    case = GoldenCase("already-injected")
    original = load_documents(case.source.read_text(encoding="utf-8"))
    assert "sidecar.istio.io/status" in original[0]["metadata"]["annotations"]
    assert case.expected_documents() == original
    outcome = case.injector().admit(original[0], original[0]["metadata"]["namespace"])
    assert outcome.kind == "injected"
    assert outcome.patch is not None and json.loads(outcome.patch) == []


@pytest.mark.parametrize("name", ["host-network", "opt-out", "opt-out-annotation"])
def test_skipped_workloads_pass_through_unchanged(name: str) -> None:
    case = GoldenCase(name)
    assert case.expected_documents() == load_documents(case.source.read_text(encoding="utf-8"))


def _pod_cases() -> list[GoldenCase]:
    pods = []
    for case in CASES:
        documents = load_documents(case.source.read_text(encoding="utf-8"))
        if len(documents) == 1 and documents[0].get("kind") == "Pod":
            pods.append(case)
    return pods


@pytest.mark.parametrize("case", _pod_cases(), ids=lambda c: c.name)
def test_webhook_patch_gives_the_golden_pod(case: GoldenCase) -> None:
    """Manual and automatic injection share one engine: same pod either way."""
    (pod,) = load_documents(case.source.read_text(encoding="utf-8"))
    (expected,) = case.expected_documents()
    namespace = pod["metadata"].get("namespace", "default")
    outcome = case.injector().admit(pod, namespace)
    if outcome.kind == "skipped":  # opt-out, hostNetwork: kube-inject left it alone too
        assert expected == pod
        return
    assert outcome.kind == "injected", outcome.reason
    assert outcome.patch is not None
    assert outcome.pod == expected
    assert jsonpatch.apply_patch(pod, json.loads(outcome.patch)) == expected
