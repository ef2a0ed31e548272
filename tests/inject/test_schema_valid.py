"""Every golden kube-inject output is a valid Kubernetes object: strict validation (no unknown
fields) against the official OpenAPI schemas of Kubernetes 1.28 (the oldest with native
sidecars) and of the newest version kubernetes-validate ships."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from golden_support import golden_cases, load_documents

OLDEST = "1.28"
NEWEST = ".".join(kubernetes_validate.latest_version().split(".")[:2])


def _objects(document: Any) -> list[Any]:
    """Lists have no schema of their own: validate what they hold."""
    if isinstance(document, dict) and document.get("kind") == "List":
        return [o for item in document["items"] for o in _objects(item)]
    return [document]


def _golden_objects() -> list[Any]:
    params = []
    for case in golden_cases():
        if not case.expected.exists():
            continue
        for index, document in enumerate(case.expected_documents(), start=1):
            for obj in _objects(document):
                params.append(pytest.param(obj, id=f"{case.name}-{index}-{obj['kind']}"))
    return params


def test_newest_version_is_newer_than_oldest() -> None:
    assert tuple(map(int, NEWEST.split("."))) > (1, 28)


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
@pytest.mark.parametrize("obj", _golden_objects())
def test_golden_output_validates_strictly(obj: dict[str, Any], version: str) -> None:
    try:
        validated = kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        pytest.fail(f"invalid for Kubernetes {exc.version} at {where}: {exc.message}")
    assert validated == version


def test_validation_really_rejects_unknown_fields() -> None:
    """Guard against a validator that accepts anything."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "i", "restartPolicyy": "Always"}]},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, NEWEST, strict=True)
    assert load_documents("a: 1\n---\n") == [{"a": 1}]
