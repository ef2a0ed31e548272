"""`sidemesh uninstall` removes what install created outside istio-system: the Role and
RoleBinding reading gateway credential Secrets in each `gateways.credentialNamespaces`
namespace, for that revision only, and only objects labelled as sidemesh's (the in-memory
API of tests/kube)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import kmock
import kubernetes_validate
from lightkube import AsyncClient, KubeConfig
from lightkube.config.models import Cluster, User

from sidemesh.install import naming, rbac
from sidemesh.install.values import InstallValues
from sidemesh.kube import installer

ROLES = "rbac.authorization.k8s.io/v1/roles"
BINDINGS = "rbac.authorization.k8s.io/v1/rolebindings"


def _cluster_emulator() -> Any:
    """tests/kube's in-memory API server (kmock, taught server-side apply and selectors)."""
    kube_tests = str(Path(__file__).resolve().parents[1] / "kube")
    if kube_tests not in sys.path:
        sys.path.append(kube_tests)
    return importlib.import_module("cluster_emulator")


@asynccontextmanager
async def _cluster() -> AsyncIterator[tuple[Any, AsyncClient]]:
    async with _cluster_emulator().ApiServer() as api, kmock.Server(api):
        config = KubeConfig.from_one(cluster=Cluster(server=str(api.url)), user=User())
        async with AsyncClient(config=config, field_manager="sidemesh-test") as client:
            yield api, client


def _quiet(_: str) -> None:
    pass


async def _install(client: AsyncClient, revision: str, namespaces: list[str]) -> None:
    values = InstallValues.model_validate({"gateways": {"credentialNamespaces": namespaces}})
    await installer.install(client, values, revision, report=_quiet)


def _names(api: Any, namespace: str) -> dict[str, set[str]]:
    return {"Role": api.stored_names(ROLES, namespace),
            "RoleBinding": api.stored_names(BINDINGS, namespace)}  # fmt: skip


async def test_uninstall_removes_the_credential_readers_of_its_revision_only() -> None:
    blue, green = rbac.credential_reader_name("blue"), rbac.credential_reader_name("green")
    async with _cluster() as (api, client):
        await _install(client, "blue", ["edge", "shop"])
        await _install(client, "green", ["edge"])
        assert _names(api, "edge") == {"Role": {blue, green}, "RoleBinding": {blue, green}}
        deleted = await installer.uninstall(client, "blue", report=_quiet)
        assert _names(api, "edge") == {"Role": {green}, "RoleBinding": {green}}
        assert _names(api, "shop") == {"Role": set(), "RoleBinding": set()}
        assert {f"{kind}/{blue} -n {namespace}" for kind in ("Role", "RoleBinding")
                for namespace in ("edge", "shop")} <= set(deleted)  # fmt: skip
        await installer.uninstall(client, "green", report=_quiet)
        assert _names(api, "edge") == {"Role": set(), "RoleBinding": set()}


async def test_uninstall_finds_them_after_the_values_changed() -> None:
    """An install with credential namespaces, re-installed without: uninstall still finds
    the first install's Roles by their labels (not from today's values)."""
    async with _cluster() as (api, client):
        await _install(client, "blue", ["edge"])
        await _install(client, "blue", [])
        await installer.uninstall(client, "blue", report=_quiet)
        assert _names(api, "edge") == {"Role": set(), "RoleBinding": set()}


async def test_a_role_not_labelled_as_sidemeshs_is_left_alone() -> None:
    """Outside istio-system a Role carrying only our revision label (copied by hand, or
    another tool's) is not ours to delete: both of install's labels are required there."""
    async with _cluster() as (api, client):
        await _install(client, "blue", ["edge"])
        look_alike = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                      "metadata": {"name": "team-secrets", "namespace": "edge",
                                   "labels": {naming.LABEL_INSTALL_REVISION: "blue"}},
                      "rules": [{"apiGroups": [""], "resources": ["secrets"],
                                 "verbs": ["get"]}]}  # fmt: skip
        kubernetes_validate.validate(
            look_alike, kubernetes_validate.utils.latest_version(), strict=True
        )
        api.store(ROLES, look_alike)
        await installer.uninstall(client, "blue", report=_quiet)
        assert _names(api, "edge") == {"Role": {"team-secrets"}, "RoleBinding": set()}
