"""Gateway credentials on Kubernetes: Secrets are readable only in the namespaces of
`gateways.credentialNamespaces` (a Role and RoleBinding in each), never cluster-wide, and the
discovery is told the same list."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from sidemesh.install import manifests
from sidemesh.install.values import InstallValues


def _objects(**gateways: Any) -> list[dict[str, Any]]:
    values = InstallValues.model_validate({"gateways": gateways} if gateways else {})
    return manifests.render(values, "default")


def _credential_roles(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        o["metadata"]["namespace"]: o
        for o in objects
        if o["kind"] == "Role" and o["metadata"]["name"].endswith("-gateway-credentials")
    }


@pytest.mark.parametrize(
    ("namespaces", "expected"),
    [
        (None, ["istio-system"]),
        (["istio-ingress", "istio-system"], ["istio-ingress", "istio-system"]),
        ([], []),
    ],
)
def test_secrets_are_read_only_where_values_say(
    namespaces: list[str] | None, expected: list[str]
) -> None:
    objects = _objects() if namespaces is None else _objects(credentialNamespaces=namespaces)
    roles = _credential_roles(objects)
    assert sorted(roles) == sorted(expected)
    for role in roles.values():
        assert role["rules"] == [
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]}
        ]
    bindings = {o["metadata"]["namespace"] for o in objects if o["kind"] == "RoleBinding"
                and o["metadata"]["name"].endswith("-gateway-credentials")}  # fmt: skip
    assert bindings == set(expected)
    (cluster_role,) = [o for o in objects if o["kind"] == "ClusterRole"]
    cluster = {(r, v) for rule in cluster_role["rules"] for r in rule["resources"]
               for v in rule["verbs"]}  # fmt: skip
    assert not any(r == "secrets" for r, _ in cluster)
    assert {v for r, v in cluster if r == "gateways"} == {"get", "list", "watch"}
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    env = {e["name"]: e.get("value") for e in
           deployment["spec"]["template"]["spec"]["containers"][0]["env"]}  # fmt: skip
    assert env["GATEWAY_CREDENTIAL_NAMESPACES"] == ",".join(expected)


@pytest.mark.parametrize("bad", ["Istio-System", "a b", "x" * 64, ""])
def test_a_namespace_name_is_checked(bad: str) -> None:
    with pytest.raises(ValidationError):
        InstallValues.model_validate({"gateways": {"credentialNamespaces": [bad]}})
