"""PeerAuthentication objects → the model: Istio's validation (each refusal names its field),
the creation time that decides "oldest wins", and what the registry ignores instead of
refusing."""

from __future__ import annotations

from typing import Any

import pytest

from sidemesh.api.config import MeshConfig
from sidemesh.cli.validate import check_document
from sidemesh.xds.builder import build_snapshot
from sidemesh.xds.convert import ObjectError, peer_authentication


def policy(spec: dict[str, Any], *, name: str = "finance", created: str | None = None) -> Any:
    metadata: dict[str, Any] = {"name": name, "namespace": "foo"}
    if created is not None:
        metadata["creationTimestamp"] = created
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": metadata, "spec": spec}  # fmt: skip


SELECTOR = {"matchLabels": {"app": "finance"}}


def test_selector_and_port_levels_are_read() -> None:
    found = peer_authentication(policy({
        "selector": SELECTOR, "mtls": {"mode": "STRICT"},
        "portLevelMtls": {8080: {"mode": "PERMISSIVE"}, "9090": {"mode": "UNSET"}},
    }, created="2026-12-04T10:00:00Z"))  # fmt: skip
    assert found.selector == (("app", "finance"),)
    assert found.mode == "STRICT"
    assert found.port_modes == ((8080, "PERMISSIVE"), (9090, None))
    assert found.created == 1796378400.0


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"mtls": {"mode": "STRICTEST"}}, "spec.mtls.mode"),
        ({"selector": SELECTOR, "portLevelMtls": {8080: {"mode": "ON"}}},
         "spec.portLevelMtls.8080.mode"),
        ({"selector": SELECTOR, "portLevelMtls": {0: {"mode": "STRICT"}}}, "spec.portLevelMtls.0"),
        ({"selector": SELECTOR, "portLevelMtls": {65536: {"mode": "STRICT"}}},
         "spec.portLevelMtls.65536"),
        ({"selector": SELECTOR, "portLevelMtls": {"http": {"mode": "STRICT"}}},
         "spec.portLevelMtls.http"),
        ({"mtls": {"mode": "STRICT"}, "portLevelMtls": {8080: {"mode": "DISABLE"}}},
         "spec.portLevelMtls needs spec.selector"),
        ({"selector": {"matchLabels": {}}, "portLevelMtls": {8080: {"mode": "DISABLE"}}},
         "spec.portLevelMtls needs spec.selector"),
    ],
)  # fmt: skip
def test_refusals_name_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ObjectError, match=field.replace(".", r"\.")):
        peer_authentication(policy(spec))
    problems = check_document(policy(spec))  # `sidemesh validate`
    assert problems and field in problems[0]


def test_a_bad_creation_time_is_named() -> None:
    with pytest.raises(ObjectError, match=r"metadata\.creationTimestamp"):
        peer_authentication(policy({}, created="yesterday"))


def test_the_registry_keeps_a_namespace_policy_with_port_levels_and_says_why() -> None:
    """Past a webhook, Istio ignores the port levels; the namespace's mode still holds."""
    obj = policy({"mtls": {"mode": "STRICT"}, "portLevelMtls": {8080: {"mode": "DISABLE"}}},
                 name="default")  # fmt: skip
    problems: list[str] = []
    snapshot = build_snapshot({("PeerAuthentication", "foo", "default"): obj}, mesh=MeshConfig(),
                              version=1, errors=problems)  # fmt: skip
    assert snapshot.mtls_mode("foo", {}, 8080) == "STRICT"
    assert len(problems) == 1 and "spec.portLevelMtls" in problems[0]
    assert "ignored" in problems[0]


def test_the_oldest_workload_policy_wins_by_creation_time_not_name() -> None:
    older = policy({"selector": SELECTOR, "mtls": {"mode": "STRICT"}}, name="zz-old",
                   created="2026-01-01T00:00:00Z")  # fmt: skip
    newer = policy({"selector": SELECTOR, "mtls": {"mode": "DISABLE"}}, name="aa-new",
                   created="2026-06-01T00:00:00Z")  # fmt: skip
    snapshot = build_snapshot(
        {("PeerAuthentication", "foo", "zz-old"): older,
         ("PeerAuthentication", "foo", "aa-new"): newer}, mesh=MeshConfig(), version=1,
    )  # fmt: skip
    assert snapshot.mtls_mode("foo", {"app": "finance"}, 8080) == "STRICT"
