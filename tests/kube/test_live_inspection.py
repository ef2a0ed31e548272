"""Looking at a live (in-memory) cluster: live check-inject, `analyze`, `injector list`."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from cluster_emulator import ApiServer
from lightkube import AsyncClient

from sidemesh.analyze.live_check import (
    LiveCheckError,
    check_inject_live,
    parse_label_selector,
    parse_target,
)
from sidemesh.cli.main import cli
from sidemesh.install.overrides import load_install_values
from sidemesh.kube import installer, tags

MWC = "admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


async def _install(client: AsyncClient, revision: str) -> None:
    values, chosen = load_install_values([], [], revision=revision)
    await installer.install(client, values, chosen, report=lambda _: None)


def _pod(ns: str, name: str, labels: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {}, **extra},
            "spec": {"containers": [{"name": "app", "image": "app"}]},
            "status": {"phase": "Running"}}  # fmt: skip


async def _cluster(api: ApiServer, client: AsyncClient) -> None:
    await _install(client, "blue")
    await _install(client, "green")
    await tags.set_tag(client, "prod", "green")
    for name, labels in [("shop", {"istio.io/rev": "prod"}), ("dev", {"istio.io/rev": "blue"}),
                         ("plain", {})]:  # fmt: skip
        api.store("v1/namespaces", {"metadata": {"name": name, "labels": labels}})
    api.store("v1/pods", _pod("shop", "web-1", {"app": "web"}))
    api.store("v1/pods", _pod("shop", "web-2", {"app": "web", "sidecar.istio.io/inject": "false"}))
    api.store("v1/pods", _pod("plain", "lonely", {"app": "web"}))
    api.store("apps/v1/deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "dev"},
        "spec": {"selector": {"matchLabels": {"app": "api"}},
                 "template": {"metadata": {"labels": {"app": "api"}},
                              "spec": {"containers": [{"name": "api", "image": "api"}]}}},
    })  # fmt: skip


async def test_live_check_of_a_pod_names_webhook_revision_and_reason(
    api: ApiServer, client: AsyncClient
) -> None:
    await _cluster(api, client)
    check = await check_inject_live(client, target="web-1", namespace="shop", selector=None)
    (result,) = check.results
    assert result.injected and result.revision == "green"
    assert result.webhook == "istio-revision-tag-prod/rev.namespace.sidecar-injector.istio.io"
    assert "istio.io/rev In [prod]" in result.reason
    assert check.conflicts == ()


async def test_live_check_of_a_deployment_and_by_selector(
    api: ApiServer, client: AsyncClient
) -> None:
    await _cluster(api, client)
    check = await check_inject_live(client, target="deploy/api", namespace="dev", selector=None)
    assert [(r.kind, r.name, r.revision) for r in check.results] == [("Deployment", "api", "blue")]
    check = await check_inject_live(client, target=None, namespace="shop", selector="app=web")
    assert {(r.name, r.injected) for r in check.results} == {("web-1", True), ("web-2", False)}
    opted_out = next(r for r in check.results if r.name == "web-2")
    assert "sidecar.istio.io/inject=false" in opted_out.reason
    check = await check_inject_live(client, target="lonely", namespace="plain", selector=None)
    assert not check.results[0].injected
    assert "injection is off by default" in check.results[0].reason


async def test_live_check_reports_two_webhooks(api: ApiServer, client: AsyncClient) -> None:
    await _cluster(api, client)
    twin = copy.deepcopy(api.stored(MWC, None, "istio-revision-tag-prod") or {})
    twin["metadata"] = {"name": "istio-revision-tag-prod-copy",
                        "labels": twin["metadata"]["labels"]}  # fmt: skip
    api.store(MWC, twin)
    check = await check_inject_live(client, target="web-1", namespace="shop", selector=None)
    assert check.conflicts == (
        ("Pod/web-1", ("istio-revision-tag-prod", "istio-revision-tag-prod-copy")),
    )
    assert [w.code for w in check.results[0].warnings] == ["SM1002"]
    assert "IST0139" in check.results[0].warnings[0].message


async def test_live_check_errors(api: ApiServer, client: AsyncClient) -> None:
    await _cluster(api, client)
    with pytest.raises(LiveCheckError, match="not found"):
        await check_inject_live(client, target="nope", namespace="shop", selector=None)
    with pytest.raises(LiveCheckError, match="no pods match"):
        await check_inject_live(client, target=None, namespace="shop", selector="app=none")
    with pytest.raises(LiveCheckError, match="either"):
        await check_inject_live(client, target="a", namespace="shop", selector="b")
    with pytest.raises(LiveCheckError, match="KIND one of"):
        parse_target("service/x")
    assert parse_target("sts/db") == ("apps/v1", "StatefulSet", "db")


def test_label_selector_parsing() -> None:
    from lightkube.core.selector import build_selector

    selector = parse_label_selector("app=web, tier!=db,env in (a,b),!legacy,team,x notin (y)")
    assert build_selector(selector) == ("app=web,tier!=db,env in (a,b),!legacy,team,x notin (y)")


async def _run(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args))


async def test_analyze_cli(api: ApiServer, client: AsyncClient, kubeconfig: Path) -> None:
    await _cluster(api, client)
    k = ["--kubeconfig", str(kubeconfig)]
    result = await _run("analyze", "-n", "shop", *k)
    assert result.exit_code == 0, result.output
    assert "IST0103" in result.output and "Pod shop/web-1" in result.output
    result = await _run("analyze", "-A", "-o", "json", *k)
    found = json.loads(result.output)
    assert {(f["code"], f["object"]) for f in found} >= {
        ("IST0102", "Namespace plain"), ("IST0103", "Pod shop/web-1")
    }  # fmt: skip
    assert result.exit_code == 0  # nothing at Error level
    result = await _run("analyze", "-A", "--failure-threshold", "Warning", *k)
    assert result.exit_code == 79
    api.store("v1/namespaces", {"metadata": {"name": "ok", "labels": {"istio.io/rev": "blue"}}})
    result = await _run("analyze", "-n", "ok", *k)
    assert "No validation issues found when analyzing namespace: ok." in result.output


async def test_analyze_cli_exits_79_on_errors(
    api: ApiServer, client: AsyncClient, kubeconfig: Path
) -> None:
    await _cluster(api, client)
    await client.delete(
        __import__("lightkube.resources.core_v1", fromlist=["Service"]).Service,
        "istiod-blue", namespace="istio-system",
    )  # fmt: skip
    result = await _run("analyze", "-A", "--kubeconfig", str(kubeconfig))
    assert result.exit_code == 79
    assert "IST0139" in result.output and "istiod-blue" in result.output


async def test_injector_list_cli(api: ApiServer, client: AsyncClient, kubeconfig: Path) -> None:
    await _cluster(api, client)
    result = await _run("injector", "list", "--kubeconfig", str(kubeconfig))
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.output.splitlines() if line.strip()]
    assert lines[0] == ["NAMESPACE", "WEBHOOK", "REVISION", "UP-TO-DATE", "OUTDATED", "MISSING"]
    assert ["dev", "istio-sidecar-injector-blue/rev.namespace.sidecar-injector.istio.io",
            "blue", "0", "0", "0"] in lines  # fmt: skip
    shop = next(line for line in lines if line[0] == "shop")
    assert shop[2:] == ["green", "(tag", "prod)", "0", "0", "1"]
    assert ["web-1", "shop", "missing", "-", "green"] in lines
    result = await _run("injector", "list", "-o", "json", "--kubeconfig", str(kubeconfig))
    assert {r["namespace"] for r in json.loads(result.output)} == {"shop", "dev"}
