"""Validation door 2 on the real API server: `kubectl apply` of an invalid VirtualService is
refused by the revision's `istio-validator-REV-istio-system` with the words `sidemesh validate`
prints (the field named); a valid one is stored. The configuration is installed fail-open and
the control plane turns it to `failurePolicy: Fail` once it has seen its webhook refuse."""

from __future__ import annotations

from typing import Any

import orjson
import yaml
from e2e_kit import Cluster, ControlPlane, wait_for


def virtual_service(name: str, revision: str, http: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": name, "labels": {"istio.io/rev": revision}},
            "spec": {"hosts": ["reviews"], "http": [http]},
        }
    )


ROUTE = {"route": [{"destination": {"host": "reviews"}}]}


def test_invalid_configuration_is_refused_and_valid_stored(
    cluster: Cluster, control_plane: ControlPlane, namespace: str
) -> None:
    name = f"istio-validator-{control_plane.revision}-istio-system"

    def closed() -> dict[str, Any] | None:
        configuration = cluster.get_json("validatingwebhookconfiguration", name)
        hook = configuration["webhooks"][0]
        ready = hook["failurePolicy"] == "Fail" and hook["clientConfig"].get("caBundle")
        return configuration if ready else None

    configuration = wait_for(f"{name} to be trusted and failurePolicy Fail", closed)
    rule = configuration["webhooks"][0]["rules"][0]
    assert rule["apiGroups"] == ["networking.istio.io", "security.istio.io", "telemetry.istio.io"]
    assert configuration["webhooks"][0]["clientConfig"]["url"].endswith("/validate")

    invalid = virtual_service(
        "bad-retries", control_plane.revision,
        {**ROUTE, "retries": {"attempts": 3, "retryOn": "sometimes"}},
    )  # fmt: skip
    refused = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=invalid, check=False)
    assert refused.returncode != 0
    assert 'admission webhook "rev.validation.istio.io" denied the request' in refused.stderr
    offline = cluster.sidemesh("validate", "-f", "-", input=invalid, check=False)
    problem = offline.stderr.splitlines()[0].split("VirtualService default/bad-retries: ")[1]
    assert problem.startswith("spec.http[0].retries.retryOn: ")
    assert f"VirtualService {namespace}/bad-retries: {problem}" in refused.stderr
    assert cluster.try_get_json("virtualservice", "bad-retries", "-n", namespace) is None

    valid = virtual_service("good", control_plane.revision, ROUTE)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=valid)
    assert cluster.get_json("virtualservice", "good", "-n", namespace)["spec"]["hosts"] == [
        "reviews"
    ]


def test_valid_but_dangling_configuration_is_found_by_analyze(
    cluster: Cluster, control_plane: ControlPlane, namespace: str
) -> None:
    """What validation cannot see (a reference to something missing) `analyze` reports,
    with Istio's code, next to the injection findings."""
    dangling = virtual_service(
        "to-v3", control_plane.revision,
        {"route": [{"destination": {"host": "reviews", "subset": "v3"}}]},
    )  # fmt: skip
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=dangling)
    result = cluster.sidemesh("analyze", "-n", namespace, "-o", "json", check=False)
    assert result.returncode == 79, result.stderr  # an Error-level finding
    found = {(f["code"], f["object"]) for f in orjson.loads(result.stdout)}
    assert ("IST0101", f"VirtualService {namespace}/to-v3") in found
    assert ("IST0102", f"Namespace {namespace}") in found  # injection findings too
