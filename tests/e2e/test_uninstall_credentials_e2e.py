"""On a real kube-apiserver: `sidemesh uninstall` removes the gateway credential Role and
RoleBinding its install put in a `gateways.credentialNamespaces` namespace (outside
istio-system), and leaves a Role there that is not sidemesh's."""

from __future__ import annotations

import pytest
from e2e_kit import Cluster, ControlPlane, free_port

REVISION = "e2e-creds"


def roles(cluster: Cluster, namespace: str) -> set[str]:
    items = cluster.get_json("roles,rolebindings", "-n", namespace)["items"]
    return {f"{item['kind']}/{item['metadata']['name']}" for item in items}


def test_uninstall_removes_credential_readers_outside_istio_system(
    cluster: Cluster, namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    plane = ControlPlane(
        cluster, REVISION, tmp_path_factory.mktemp("cp-creds"), webhook_port=free_port()
    )
    plane.install("--set", f"gateways.credentialNamespaces={{{namespace}}}")
    cluster.kubectl("create", "role", "team-secrets", "-n", namespace, "--verb=get",
                    "--resource=secrets")  # fmt: skip
    name = f"istiod-{REVISION}-gateway-credentials"
    assert roles(cluster, namespace) == {f"Role/{name}", f"RoleBinding/{name}",
                                         "Role/team-secrets"}  # fmt: skip
    # Keep istio-system: the run's other revision (a session fixture) may be installed later.
    result = cluster.sidemesh("uninstall", "--revision", REVISION, "--keep-namespace")
    assert f"Role/{name} -n {namespace}" in result.stdout
    assert roles(cluster, namespace) == {"Role/team-secrets"}
