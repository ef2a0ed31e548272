"""Streaming `kube-inject` writes the same bytes as the whole-file version it replaced (kept
here as the reference: every document loaded at once by PyYAML, injected, dumped by PyYAML),
on the golden corpus and on Lists in every arrangement the streaming path distinguishes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from sidemesh.api import manifests
from sidemesh.api.block_yaml import pyyaml_dump
from sidemesh.cli.kube_inject import kube_inject
from sidemesh.inject.engine import Injector
from sidemesh.inject.manual import inject_document

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "inject"))
from golden_support import GoldenCase, golden_cases


def reference(injector: Injector, text: str, label: str) -> tuple[bytes, list[str]]:
    """kube-inject before streaming: (stdout, stderr lines)."""
    reported: list[str] = []
    documents = [d for d in yaml.load_all(text, Loader=yaml.CSafeLoader) if d is not None]
    injected = [
        inject_document(injector, document, label, index, reported.append)
        for index, document in enumerate(documents, start=1)
    ]
    return "---\n".join(pyyaml_dump(d) for d in injected).encode(), reported


def run(source: Path, *options: str) -> tuple[bytes, list[str]]:
    result = CliRunner().invoke(kube_inject, ["-f", str(source), *options])
    assert result.exit_code == 0, result.stderr
    return result.stdout_bytes, result.stderr.splitlines()


@pytest.mark.parametrize("case", golden_cases(), ids=lambda c: c.name)
def test_golden_corpus_output_is_unchanged(case: GoldenCase) -> None:
    text = case.source.read_text(encoding="utf-8")
    assert run(case.source, *case.cli_options()) == reference(
        case.injector(), text, str(case.source)
    )


def pod(number: int, app: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{app}-7d4f8-{number:05d}",
            "namespace": "shop",
            "labels": {"app": app, "pod-template-hash": "7d4f8"},
            "annotations": {"note": "a long annotation value with spaces " * 3},
        },
        "spec": {
            "containers": [
                {
                    "name": app,
                    "image": f"shop/{app}:1.{number % 3}",
                    "ports": [{"containerPort": 8080}],
                    "env": [{"name": "MODE", "value": "yes"}, {"name": "N", "value": "010"}],
                }
            ]
        },
        "status": {"podIP": f"10.0.0.{number}", "startTime": "2026-12-04T10:00:00Z"},
    }


ITEMS = [
    pod(1, "web"),
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {}},
    pod(2, "web"),
    {"kind": "List", "items": [pod(3, "api")]},
    pod(4, "api"),
]
SORTED_LIST = {"apiVersion": "v1", "items": ITEMS, "kind": "List", "metadata": {"x": ""}}

LISTS = {
    # kubectl sorts keys: the items arrive before the kind says this is a List
    "items-before-kind": yaml.safe_dump(SORTED_LIST),
    "kind-first": yaml.safe_dump(
        {"kind": "List", "apiVersion": "v1", "items": ITEMS}, sort_keys=False
    ),
    "no-kind": yaml.safe_dump({"items": ITEMS}),
    "pod-list-passes-through": yaml.safe_dump({"items": ITEMS, "kind": "PodList"}),
    "empty-items": "apiVersion: v1\nitems: []\nkind: List\n",
    "empty-items-kind-first": "kind: List\nitems: []\nmetadata: {}\n",
    "items-not-a-list": "kind: List\nitems: {a: 1}\n",
    "workload-with-items-field": yaml.safe_dump({**pod(5, "odd"), "items": [1, 2]}),
    "flow-style-list": (  # kubectl -o json
        '{"kind": "List", "items": [{"kind": "Service", "metadata": {"name": "s"}}]}\n'
    ),
    "anchors-across-items": (
        "kind: List\nitems:\n- &svc {kind: Service, metadata: {name: a}}\n- *svc\n"
        "- &p " + yaml.safe_dump(pod(6, "web"), default_flow_style=True)
    ),
    "anchors-after-a-skipped-pod": (  # the skip is said once, though the List is read twice
        "kind: List\nitems:\n- "
        + yaml.safe_dump(pod(7, "web"), default_flow_style=True)
        + "- {kind: Pod, metadata: {name: out, annotations: {sidecar.istio.io/inject: 'false'}}, "
        "spec: {containers: [{name: a, image: x}]}}\n"
        "- &svc {kind: Service, metadata: {name: a}}\n- *svc\n"
    ),
    "anchors-in-a-later-document": (
        yaml.safe_dump(SORTED_LIST) + "---\n" + yaml.safe_dump(SORTED_LIST) + "---\n"
        "kind: List\nitems:\n- &svc {kind: Service, metadata: {name: a}}\n- *svc\n"
        "---\n" + yaml.safe_dump(SORTED_LIST)
    ),
    "duplicate-top-level-key": "kind: Service\nitems: [1]\nkind: List\n",
    "merge-key": "base: &b {a: 1}\nkind: List\nitems:\n- <<: *b\n  kind: Service\n",
    "tags-and-types": (
        "kind: List\nitems:\n- kind: ConfigMap\n  metadata: {name: c}\n  data:\n"
        "    a: !!str 12\n    b: 2026-12-04\n    c: 1.5e3\n    d: ~\n    e: 0x1F\n"
        "    f: '<<'\n    g: |\n      two\n      lines\n"
    ),
    "several-documents": "---\n".join(
        [yaml.safe_dump(SORTED_LIST), "", "# comment only\n", "just a string\n", "- [1, 2]\n"]
    ),
}


@pytest.mark.parametrize("name", sorted(LISTS))
def test_lists_output_is_unchanged(name: str, tmp_path: Path) -> None:
    source = tmp_path / f"{name}.yaml"
    source.write_text(LISTS[name], encoding="utf-8")
    assert run(source) == reference(Injector(), LISTS[name], str(source))


def test_stdin_output_is_unchanged() -> None:
    text = LISTS["items-before-kind"]
    result = CliRunner().invoke(kube_inject, ["-f", "-"], input=text)
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes == reference(Injector(), text, "<stdin>")[0]


def test_a_list_is_read_an_item_at_a_time(tmp_path: Path) -> None:
    source = tmp_path / "list.yaml"
    source.write_text(LISTS["items-before-kind"], encoding="utf-8")
    kinds = [type(p).__name__ for p in manifests.pieces(str(source))]
    assert kinds == [
        "DocumentStart", "Field", "ItemsStart", *["Item"] * len(ITEMS), "ItemsEnd",
        "Field", "Field", "DocumentEnd",
    ]  # fmt: skip


def test_anchors_across_items_make_the_document_whole(tmp_path: Path) -> None:
    source = tmp_path / "anchors.yaml"
    source.write_text(LISTS["anchors-across-items"], encoding="utf-8")
    with pytest.raises(manifests.NotStreamable) as raised:
        list(manifests.pieces(str(source)))
    assert raised.value.index == 1
    pieces = list(manifests.pieces(str(source), whole=frozenset({1})))
    assert [type(p).__name__ for p in pieces] == ["DocumentStart", "Whole", "DocumentEnd"]
