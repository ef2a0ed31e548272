"""`demo traffic`'s data: every configuration it applies passes the one validate path, the
tally's line is read back, and outcomes not measured are null with a reason."""

from __future__ import annotations

import pytest

from sidemesh.api import networking
from sidemesh.demo import traffic_script as ts

STEPS = {
    "v1": ts.weighted(100, 0), "90/10": ts.weighted(90, 10), "50/50": ts.weighted(50, 50),
    "v2": ts.weighted(0, 100), "retries": ts.retries(), "timeout": ts.timeout(),
    "breaker": ts.circuit_breaker(), "outlier": ts.outlier_detection(), "ingress": ts.ingress(),
}  # fmt: skip


@pytest.mark.parametrize("step", STEPS)
def test_each_steps_configuration_is_valid(step: str) -> None:
    for document in STEPS[step]:
        networking.validate(document)


def test_the_canary_weights() -> None:
    [service, _] = ts.weighted(90, 10)
    routes = service["spec"]["http"][0]["route"]
    assert [(r["destination"]["subset"], r["weight"]) for r in routes] == [("v1", 90), ("v2", 10)]
    [only_v2, _] = ts.weighted(0, 100)
    assert [r["destination"]["subset"] for r in only_v2["spec"]["http"][0]["route"]] == ["v2"]


def test_the_app_labels_the_namespace_and_pools_v1_with_the_broken_version() -> None:
    objects = ts.app_objects("canary")
    assert objects[0]["metadata"]["labels"] == {"istio.io/rev": "canary"}
    pooled = sorted(
        o["metadata"]["name"] for o in objects
        if o["kind"] == "Deployment"
        and o["spec"]["template"]["metadata"]["labels"].get("pool") == "a"
    )  # fmt: skip
    assert pooled == ["web-broken", "web-v1"]


def test_a_tally_line_is_read_back() -> None:
    output = (
        'noise\n{"status": {"200": 9, "503": 1}, "versions": {"v1": 9}, "overloaded": 1,'
        ' "max_ms": 12, "errors": []}\n'
    )
    counted = ts.parse_tally(output)
    assert counted is not None
    assert (counted.total, counted.ok, counted.overloaded, counted.max_ms) == (10, 9, 1, 12)
    assert counted.share("v1") == 90.0
    assert ts.parse_tally("Traceback ...\nConnectionRefusedError") is None


def test_outcomes_not_measured_are_null_with_a_reason() -> None:
    outcomes = ts.Outcomes(split_v2_percent=10.2, ok=True)
    shown = outcomes.as_dict()
    assert shown["split_v2_percent"] == 10.2
    assert shown["registry_only_refused"] is None and shown["gateway_ok"] is None
    assert set(shown["not_measured"]) == {"registry_only_refused", "gateway_ok"}
