"""Telemetry `metrics` overrides merged across the mesh, namespace and workload levels (Istio's
`mergeMetrics`): a truth table of the pure rule, and the same rule seen through
`telemetry_policy` with real Telemetry resources at each level."""

from __future__ import annotations

from typing import Any

import pytest

from sidemesh.api import telemetry
from sidemesh.api.config import MeshConfig
from sidemesh.api.telemetry.mesh import mesh_telemetry
from sidemesh.api.telemetry.model import METRICS, Telemetry
from sidemesh.xds.model import MeshSnapshot
from sidemesh.xds.telemetry_policy import merge_metrics, telemetry_policy

ALL_FAMILIES = frozenset(f for names in METRICS.values() for f in names)
COUNT = "requests_total"
DURATION = "request_duration_milliseconds"


def override(metric: str | None = None, *, mode: str | None = None, disabled: bool | None = None,
             remove: tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
    found: dict[str, Any] = {}
    match = {key: value for key, value in (("metric", metric), ("mode", mode)) if value}
    if match:
        found["match"] = match
    if disabled is not None:
        found["disabled"] = disabled
    if remove:
        found["tagOverrides"] = {tag: {"operation": "REMOVE"} for tag in remove}
    return found


def spec(*overrides: dict[str, Any]) -> Telemetry:
    return Telemetry.model_validate({"metrics": [{"overrides": list(overrides)}]})


OFF_COUNT = override("REQUEST_COUNT", disabled=True)
ON_COUNT = override("REQUEST_COUNT", disabled=False)
OFF_ALL = override("ALL_METRICS", disabled=True)
ON_ALL = override("ALL_METRICS", disabled=False)
OFF_EVERY = override(disabled=True)  # no match.metric: each metric, not Istio's ALL_METRICS
NO_PROTOCOL = override("REQUEST_COUNT", remove=("request_protocol",))
CLIENT_OFF_COUNT = override("REQUEST_COUNT", mode="CLIENT", disabled=True)
SERVER_ON_COUNT = override("REQUEST_COUNT", mode="SERVER", disabled=False)

# (levels least specific first, each a list of overrides) → (client disabled, server disabled)
TRUTH_TABLE: list[tuple[list[list[dict[str, Any]]], frozenset[str], frozenset[str]]] = [
    ([], frozenset(), frozenset()),
    ([[OFF_COUNT]], frozenset({COUNT}), frozenset({COUNT})),
    # a later level re-enables what an earlier one disabled
    ([[OFF_COUNT], [ON_COUNT]], frozenset(), frozenset()),
    ([[OFF_COUNT], [], [ON_COUNT]], frozenset(), frozenset()),
    # unset `disabled` inherits; another metric's override leaves this one alone
    ([[OFF_COUNT], [NO_PROTOCOL]], frozenset({COUNT}), frozenset({COUNT})),
    ([[OFF_COUNT], [override("REQUEST_DURATION", disabled=True)]],
     frozenset({COUNT, DURATION}), frozenset({COUNT, DURATION})),
    # within one level, the later override wins too
    ([[OFF_COUNT, ON_COUNT]], frozenset(), frozenset()),
    ([[ON_COUNT, OFF_COUNT]], frozenset({COUNT}), frozenset({COUNT})),
    # sides are separate keys
    ([[CLIENT_OFF_COUNT]], frozenset({COUNT}), frozenset()),
    ([[OFF_COUNT], [SERVER_ON_COUNT]], frozenset({COUNT}), frozenset()),
    # ALL_METRICS disabled turns every metric off...
    ([[OFF_ALL]], ALL_FAMILIES, ALL_FAMILIES),
    # ...and any later override turns them back on, keeping earlier per-metric state
    ([[OFF_ALL], [NO_PROTOCOL]], frozenset(), frozenset()),
    ([[OFF_COUNT], [OFF_ALL], [override("REQUEST_DURATION", remove=("x",))]],
     frozenset({COUNT}), frozenset({COUNT})),
    ([[OFF_ALL], [ON_ALL]], frozenset(), frozenset()),
    ([[OFF_ALL, ON_COUNT]], frozenset(), frozenset()),
    # a workload's ALL_METRICS disable wins over a namespace that enabled a metric
    ([[ON_COUNT], [OFF_ALL]], ALL_FAMILIES, ALL_FAMILIES),
    # no match.metric disables each metric; a later override of one metric keeps the rest off
    ([[OFF_EVERY], [ON_COUNT]], ALL_FAMILIES - {COUNT}, ALL_FAMILIES - {COUNT}),
    ([[OFF_EVERY], [ON_ALL]], frozenset(), frozenset()),
    # ALL_METRICS for one side only: the other side keeps its metrics (mode honoured)
    ([[override("ALL_METRICS", mode="CLIENT", disabled=True)]], ALL_FAMILIES, frozenset()),
    ([[override("ALL_METRICS", mode="CLIENT", disabled=True)], [SERVER_ON_COUNT]],
     ALL_FAMILIES, frozenset()),
]  # fmt: skip


@pytest.mark.parametrize(("levels", "client", "server"), TRUTH_TABLE)
def test_merge_truth_table(
    levels: list[list[dict[str, Any]]], client: frozenset[str], server: frozenset[str]
) -> None:
    specs = [spec(*overrides) for overrides in levels]
    assert merge_metrics(specs, "CLIENT")[0] == client
    assert merge_metrics(specs, "SERVER")[0] == server


def test_tag_removals_accumulate_per_metric_and_side() -> None:
    server_only = override("REQUEST_COUNT", mode="SERVER", remove=("response_flags",))
    specs = [spec(override(remove=("request_protocol",))), spec(server_only)]
    _, client = merge_metrics(specs, "CLIENT")
    _, server = merge_metrics(specs, "SERVER")
    assert (COUNT, "request_protocol") in client and (DURATION, "request_protocol") in client
    assert (COUNT, "response_flags") not in client
    assert set(server) == set(client) | {(COUNT, "response_flags")}


def telemetry_object(namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
            "metadata": {"name": name, "namespace": namespace}, "spec": body}  # fmt: skip


def snapshot(*objects: dict[str, Any]) -> MeshSnapshot:
    return MeshSnapshot(version=1, telemetries=tuple(telemetry.validate(o) for o in objects),
                        mesh_telemetry=mesh_telemetry(MeshConfig()))  # fmt: skip


MESH_OFF = telemetry_object("istio-system", "mesh",
                            {"metrics": [{"overrides": [OFF_COUNT, NO_PROTOCOL]}]})  # fmt: skip
NAMESPACE_DURATION_OFF = telemetry_object("demo", "ns", {"metrics": [{"overrides": [
    override("REQUEST_DURATION", disabled=True)]}]})  # fmt: skip
NAMESPACE_LOGS_ONLY = telemetry_object("demo", "logs", {"accessLogging": [{"disabled": True}]})
WORKLOAD_COUNT_ON = telemetry_object(
    "demo",
    "web",
    {"selector": {"matchLabels": {"app": "web"}}, "metrics": [{"overrides": [ON_COUNT]}]},
)
OTHER_WORKLOAD_ALL_OFF = telemetry_object(
    "demo",
    "other",
    {"selector": {"matchLabels": {"app": "other"}}, "metrics": [{"overrides": [OFF_ALL]}]},
)


def test_levels_merge_through_telemetry_policy() -> None:
    objects = (MESH_OFF, NAMESPACE_DURATION_OFF, NAMESPACE_LOGS_ONLY, WORKLOAD_COUNT_ON,
               OTHER_WORKLOAD_ALL_OFF)  # fmt: skip
    web = telemetry_policy(snapshot(*objects), "demo", {"app": "web"})
    # the mesh disabled the count, the namespace the duration, the workload re-enabled the count
    assert web.client.disabled_metrics == web.server.disabled_metrics == {DURATION}
    assert (COUNT, "request_protocol") in web.server.removed_tags  # the mesh's removal stays
    other = telemetry_policy(snapshot(*objects), "demo", {"app": "other"})
    assert other.server.disabled_metrics == ALL_FAMILIES
    elsewhere = telemetry_policy(snapshot(*objects), "prod", {"app": "web"})
    assert elsewhere.server.disabled_metrics == {COUNT}  # the mesh level alone
