"""`sidemesh authz check POD` against a live (in-memory) cluster: the pod and the policies
come from the API, the same report as from files; `sidemesh analyze` sees the policies too."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from cluster_emulator import ApiServer
from lightkube import AsyncClient

from sidemesh.cli.main import cli
from sidemesh.install.overrides import load_install_values
from sidemesh.kube import installer

POLICIES = "security.istio.io/v1/authorizationpolicies"


def _policy(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}  # fmt: skip


async def _cluster(api: ApiServer, client: AsyncClient) -> None:
    values, chosen = load_install_values([], [], revision="default")
    await installer.install(client, values, chosen, report=lambda _: None)  # applies the CRDs
    api.store("v1/namespaces", {"metadata": {"name": "shop", "labels": {}}})
    api.store("v1/pods", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-0", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "app"}]}, "status": {"phase": "Running"},
    })  # fmt: skip
    api.store(POLICIES, _policy("shop", "web", {"selector": {"matchLabels": {"app": "web"}},
                                                "rules": [{}]}))  # fmt: skip
    api.store(POLICIES, _policy("shop", "gone", {"selector": {"matchLabels": {"app": "gone"}}}))
    api.store(POLICIES, _policy("istio-system", "mesh", {"action": "DENY", "rules": [
        {"to": [{"operation": {"paths": ["/admin"]}}]}]}))  # fmt: skip


async def _run(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args))


async def test_authz_check_reads_the_cluster(
    api: ApiServer, client: AsyncClient, kubeconfig: Path
) -> None:
    await _cluster(api, client)
    result = await _run("authz", "check", "web-0.shop", "-o", "json",
                        "--kubeconfig", str(kubeconfig))  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["policies"] == [
        "AuthorizationPolicy istio-system/mesh (DENY)",
        "AuthorizationPolicy shop/web (ALLOW)",
    ]


async def test_analyze_reports_a_policy_without_workloads(
    api: ApiServer, client: AsyncClient, kubeconfig: Path
) -> None:
    await _cluster(api, client)
    result = await _run("analyze", "-n", "shop", "-o", "json", "--kubeconfig", str(kubeconfig))
    found = [(f["code"], f["object"]) for f in json.loads(result.output)]
    assert ("IST0127", "AuthorizationPolicy shop/gone") in found, result.output
