"""Every template text the golden corpus renders (built-in and custom templates, every kind of
workload) is read by the fast path, into exactly what PyYAML's CSafeLoader makes of it."""

from __future__ import annotations

import pytest
from golden_support import GoldenCase, golden_cases, run_kube_inject
from yaml_subset_support import outcome, reference

from sidemesh.inject import yaml_subset

CASES = golden_cases()


def rendered_texts(case: GoldenCase, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    texts: list[str] = []
    load = yaml_subset.load

    def recording_load(text: str) -> object:
        texts.append(text)
        return load(text)

    with monkeypatch.context() as patch:
        patch.setattr(yaml_subset, "load", recording_load)
        run_kube_inject(case)
    return texts


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_rendered_templates_take_the_fast_path(
    case: GoldenCase, monkeypatch: pytest.MonkeyPatch
) -> None:
    for text in rendered_texts(case, monkeypatch):
        expected = outcome(reference, text)
        assert expected[0] == "value"
        assert outcome(yaml_subset.parse_subset, text) == expected, text


def test_the_corpus_renders_templates(monkeypatch: pytest.MonkeyPatch) -> None:
    rendering = [c for c in CASES if rendered_texts(c, monkeypatch)]
    assert len(rendering) >= len(CASES) * 2 // 3, [c.name for c in rendering]
