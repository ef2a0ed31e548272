"""Istio's verdicts on AuthorizationPolicy and RequestAuthentication through the one
validation path (`api.security.validate`): every valid form accepted, every malformed object
refused with the field path named. Cases: tests/data/security/validation-cases.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sidemesh.api import security
from sidemesh.api.networking import ValidationError

CASES = Path(__file__).parent.parent / "data" / "security" / "validation-cases.yaml"


def _cases() -> list[Any]:
    found = []
    for document in yaml.safe_load_all(CASES.read_text()):
        name, error = document.pop("_case"), document.pop("_err", None)
        found.append(pytest.param(document, error, id=name))
    return found


@pytest.mark.parametrize(("document", "error"), _cases())
def test_istio_verdict(document: dict[str, Any], error: str | None) -> None:
    if error is None:
        resource = security.validate(document)
        assert resource.kind == document["kind"]
        return
    with pytest.raises(ValidationError) as raised:
        security.validate(document)
    problems = [str(issue) for issue in raised.value.issues]
    assert any(problem.startswith(error) for problem in problems), problems


def test_the_document_is_named_in_every_line() -> None:
    with pytest.raises(ValidationError) as raised:
        security.validate({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                           "metadata": {"name": "p", "namespace": "shop"},
                           "spec": {"action": "DENY", "rules": [{"from": []}]}})  # fmt: skip
    assert str(raised.value) == "AuthorizationPolicy shop/p: spec.rules[0].from: must not be empty"


def test_other_groups_are_not_ours() -> None:
    assert not security.is_security({"apiVersion": "security.istio.io/v1",
                                     "kind": "PeerAuthentication"})  # fmt: skip
    assert security.is_security({"apiVersion": "security.istio.io/v1beta1",
                                 "kind": "RequestAuthentication"})  # fmt: skip
