"""Telemetry (`telemetry.istio.io`) through the one validate path, as a truth table: what
sidecars honour passes; what they cannot honour is refused with the field and the reason."""

from __future__ import annotations

from typing import Any

import pytest

from sidemesh.api import telemetry
from sidemesh.api.networking import ValidationError
from sidemesh.cli.validate import GROUP_CHECKS


def document(spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
            "metadata": {"name": "t", "namespace": "demo", **metadata}, "spec": spec}  # fmt: skip


VALID = [
    {},
    {"accessLogging": [{"providers": [{"name": "envoy"}]}]},
    {"accessLogging": [{"disabled": True, "match": {"mode": "CLIENT"}}]},
    {"tracing": [{"providers": [{"name": "zipkin"}], "randomSamplingPercentage": 100,
                  "customTags": {"team": {"literal": {"value": "a"}},
                                 "env": {"environment": {"name": "X", "defaultValue": "-"}}}}]},
    {"selector": {"matchLabels": {"app": "web"}},
     "metrics": [{"overrides": [{"match": {"metric": "REQUEST_COUNT", "mode": "SERVER"},
                                 "disabled": True},
                                {"tagOverrides": {"request_protocol": {"operation": "REMOVE"}}}]}]},
]  # fmt: skip

INVALID = [
    ({"tracing": [{"randomSamplingPercentage": 101}]}, "spec.tracing[0].randomSamplingPercentage"),
    ({"accessLogging": [{"filter": {"expression": "response.code >= 400"}}]},
     "spec.accessLogging[0].filter.expression"),
    ({"metrics": [{"overrides": [{"match": {"metric": "NOPE"}}]}]},
     "spec.metrics[0].overrides[0].match.metric"),
    ({"metrics": [{"overrides": [{"tagOverrides": {"x": {"value": "request.host"}}}]}]},
     "spec.metrics[0].overrides[0].tagOverrides.x"),
    ({"tracing": [{"customTags": {"t": {}}}]}, "spec.tracing[0].customTags.t"),
    ({"selector": {"matchLabels": {}}}, "spec.selector.matchLabels"),
    ({"targetRefs": [{"kind": "Gateway", "name": "gw"}]}, "spec.targetRefs"),
    ({"tracing": [{"sampling": 1}]}, "spec.tracing[0].sampling"),
    ({"accessLogging": [{"match": {"mode": "SOMETIMES"}}]}, "spec.accessLogging[0].match.mode"),
]  # fmt: skip


@pytest.mark.parametrize("spec", VALID)
def test_valid_telemetries_pass(spec: dict[str, Any]) -> None:
    resource = telemetry.validate(document(spec))
    assert (resource.kind, resource.namespace, resource.name) == ("Telemetry", "demo", "t")
    assert GROUP_CHECKS["telemetry.istio.io"](document(spec)) == ()


@pytest.mark.parametrize(("spec", "field"), INVALID)
def test_invalid_telemetries_name_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        telemetry.validate(document(spec))
    assert [issue.path for issue in caught.value.issues] == [field]
    problems = GROUP_CHECKS["telemetry.istio.io"](document(spec))
    assert problems and problems[0].startswith(field)


def test_identity_is_checked_like_every_kind() -> None:
    with pytest.raises(ValidationError) as caught:
        telemetry.validate(document({}, name="Bad_Name"))
    assert caught.value.issues[0].path == "metadata.name"
    wrong = {**document({}), "apiVersion": "telemetry.istio.io/v9"}
    assert not telemetry.is_telemetry({**document({}), "kind": "Other"})
    with pytest.raises(ValidationError):
        telemetry.validate(wrong)
