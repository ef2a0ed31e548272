"""install / uninstall against the in-memory API: exactly one revision's objects come and go."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
from cluster_emulator import ApiServer
from lightkube import AsyncClient

from sidemesh.install import manifests, naming
from sidemesh.install.overrides import load_install_values
from sidemesh.kube import client as kube
from sidemesh.kube import installer, tags

MWC = "admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
STORED_KINDS = {
    "Namespace": ("v1/namespaces", False),
    "CustomResourceDefinition": ("apiextensions.k8s.io/v1/customresourcedefinitions", False),
    "ServiceAccount": ("v1/serviceaccounts", True),
    "ClusterRole": ("rbac.authorization.k8s.io/v1/clusterroles", False),
    "ClusterRoleBinding": ("rbac.authorization.k8s.io/v1/clusterrolebindings", False),
    "Role": ("rbac.authorization.k8s.io/v1/roles", True),
    "RoleBinding": ("rbac.authorization.k8s.io/v1/rolebindings", True),
    "ConfigMap": ("v1/configmaps", True),
    "Service": ("v1/services", True),
    "Deployment": ("apps/v1/deployments", True),
    "PodDisruptionBudget": ("policy/v1/poddisruptionbudgets", True),
    "MutatingWebhookConfiguration": (MWC, False),
    "ValidatingWebhookConfiguration": (
        "admissionregistration.k8s.io/v1/validatingwebhookconfigurations", False
    ),
}


def _quiet(_: str) -> None:
    pass


def _stored(api: ApiServer, obj: dict[str, Any]) -> dict[str, Any] | None:
    resource, namespaced = STORED_KINDS[obj["kind"]]
    namespace = "istio-system" if namespaced else None
    return api.stored(resource, namespace, obj["metadata"]["name"])


def _snapshot(api: ApiServer) -> dict[tuple[str, str | None, str], dict[str, Any]]:
    return {
        (str(resource), ns, name): obj.raw
        for (resource, ns, name), obj in api.objects.items()
        if not obj.deleted
    }


async def _install(client: AsyncClient, revision: str, *sets: str) -> list[dict[str, Any]]:
    values, chosen = load_install_values([], list(sets), revision=revision)
    await installer.install(client, values, chosen, report=_quiet)
    return manifests.render(values, chosen)


def _revision_objects(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What uninstall removes: not the Namespace or the CRDs every revision shares."""
    return [o for o in objects if naming.LABEL_INSTALL_REVISION in o["metadata"]["labels"]]


async def test_install_creates_every_object_and_they_validate(
    api: ApiServer, client: AsyncClient
) -> None:
    expected = await _install(client, "asm-173-3")
    for obj in expected:
        live = _stored(api, obj)
        assert live is not None, manifests.describe(obj)
        for key, value in obj.items():
            if key != "metadata":
                assert live[key] == value, (manifests.describe(obj), key)
        assert obj["metadata"]["labels"].items() <= live["metadata"]["labels"].items()
        # what the API holds (ours plus server-set metadata) is still a valid object
        bare = {**live, "metadata": {k: v for k, v in live["metadata"].items()}}
        for version in ("1.28", kubernetes_validate.utils.latest_version()):
            kubernetes_validate.validate(bare, version, strict=True)


async def test_install_applies_with_field_manager_sidemesh(
    api: ApiServer, client: AsyncClient
) -> None:
    await _install(client, "blue")
    patches = [r for r in api.writes() if r.method == "PATCH"]
    assert patches
    assert all(r.params.get("fieldManager") == "sidemesh-test" for r in patches)
    assert all(r.headers["Content-Type"].startswith("application/apply-patch") for r in patches)


async def test_reinstall_is_idempotent(api: ApiServer, client: AsyncClient) -> None:
    await _install(client, "blue")
    before = {k: {**v, "metadata": {**v["metadata"], "resourceVersion": None}}
              for k, v in _snapshot(api).items()}  # fmt: skip
    await _install(client, "blue")
    after = {k: {**v, "metadata": {**v["metadata"], "resourceVersion": None}}
             for k, v in _snapshot(api).items()}  # fmt: skip
    assert before == after


async def test_uninstall_one_revision_leaves_the_other_untouched(
    api: ApiServer, client: AsyncClient
) -> None:
    blue = await _install(client, "blue")
    green = await _install(client, "green")
    green_before = {manifests.describe(o): _stored(api, o) for o in green}
    deleted = await installer.uninstall(client, "blue", report=_quiet)
    assert set(deleted) == {manifests.describe(o) for o in _revision_objects(blue)}
    for obj in _revision_objects(blue):
        assert _stored(api, obj) is None, manifests.describe(obj)
    for obj in green:
        assert _stored(api, obj) == green_before[manifests.describe(obj)]
    # no write touched anything of green's
    touched = {r.url.path for r in api.writes() if "green" in r.url.path and r.method != "PATCH"}
    assert touched == set()


async def test_namespace_goes_with_the_last_revision(api: ApiServer, client: AsyncClient) -> None:
    await _install(client, "blue")
    await _install(client, "green")
    await installer.uninstall(client, "blue", report=_quiet)
    assert api.stored("v1/namespaces", None, "istio-system") is not None
    await installer.uninstall(client, "green", report=_quiet)
    assert api.stored("v1/namespaces", None, "istio-system") is None


async def test_keep_namespace(api: ApiServer, client: AsyncClient) -> None:
    await _install(client, "blue")
    await installer.uninstall(client, "blue", keep_namespace=True, report=_quiet)
    assert api.stored("v1/namespaces", None, "istio-system") is not None


async def test_uninstall_removes_control_plane_state_by_label(
    api: ApiServer, client: AsyncClient
) -> None:
    await _install(client, "blue")
    await _install(client, "green")
    for revision in ("blue", "green"):
        api.store("v1/secrets", {"metadata": {
            "name": f"istiod-{revision}-webhook-tls", "namespace": "istio-system",
            "labels": {"install.sidemesh.io/revision": revision}}})  # fmt: skip
    api.store("v1/secrets", {"metadata": {"name": "cacerts", "namespace": "istio-system"}})
    await installer.uninstall(client, "blue", report=_quiet)
    assert api.stored_names("v1/secrets", "istio-system") == {"istiod-green-webhook-tls", "cacerts"}


async def test_uninstall_refuses_while_a_tag_points_at_the_revision(
    api: ApiServer, client: AsyncClient
) -> None:
    await _install(client, "blue")
    await tags.set_tag(client, "prod", "blue")
    writes = len(api.writes())
    with pytest.raises(installer.InstallError, match=r"tag.*prod"):
        await installer.uninstall(client, "blue", report=_quiet)
    assert len(api.writes()) == writes


async def test_install_refuses_a_revision_named_like_a_tag(
    api: ApiServer, client: AsyncClient
) -> None:
    await _install(client, "blue")
    await tags.set_tag(client, "prod", "blue")
    with pytest.raises(installer.InstallError, match="tag named 'prod'"):
        await _install(client, "prod")


async def test_nothing_to_uninstall(api: ApiServer, client: AsyncClient) -> None:
    assert await installer.uninstall(client, "nope", report=_quiet) == []


async def test_a_crd_installed_by_someone_else_is_left_alone(
    api: ApiServer, client: AsyncClient
) -> None:
    values, chosen = load_install_values([], [], revision="blue")
    [ours] = [
        o for o in manifests.render(values, chosen)
        if o["metadata"]["name"] == "peerauthentications.security.istio.io"
    ]  # fmt: skip
    theirs = copy.deepcopy(ours)
    theirs["metadata"]["labels"] = {"app": "istio-pilot", "release": "istio-base"}
    theirs["spec"]["versions"] = [{**v, "storage": v["name"] == "v1beta1"}
                                  for v in theirs["spec"]["versions"]]  # fmt: skip
    await kube.apply(client, theirs)
    reports: list[str] = []
    await installer.install(client, values, chosen, report=reports.append)
    live = _stored(api, ours)
    assert live is not None
    assert live["metadata"]["labels"] == theirs["metadata"]["labels"]
    assert live["spec"]["versions"] == theirs["spec"]["versions"]
    assert any(r.startswith("kept ") and "not installed by sidemesh" in r for r in reports)

    # ours (labelled part-of sidemesh) is applied again as usual
    await kube.apply(client, ours)
    reports.clear()
    await installer.install(client, values, chosen, report=reports.append)
    assert not any(r.startswith("kept ") for r in reports)


async def test_uninstall_takes_write_access_away_before_the_control_planes_own_state(
    api: ApiServer, client: AsyncClient
) -> None:
    """A discovery still running (in a pod not yet gone, or outside the cluster) recreates its
    Lease and certificate Secret while it may write; uninstall deletes them only once its
    RBAC is gone, so nothing of the revision is left when uninstall returns."""
    await _install(client, "blue")
    labels = {"install.sidemesh.io/revision": "blue"}
    own = {"namespace": "istio-system", "labels": labels}
    api.store("v1/secrets", {"metadata": {"name": "istiod-blue-webhook-tls", **own}})
    api.store("coordination.k8s.io/v1/leases", {"metadata": {"name": "istiod-blue-leader", **own}})
    api.store("v1/secrets", {"type": "kubernetes.io/service-account-token", "metadata": {
        "name": "istiod-blue-token-x7k2p", "namespace": "istio-system",
        "annotations": {"kubernetes.io/service-account.name": "istiod-blue"}}})  # fmt: skip
    deleted = await installer.uninstall(client, "blue", keep_namespace=True, report=_quiet)
    assert "Secret/istiod-blue-token-x7k2p -n istio-system" in deleted
    deletes = [r for r in api.writes() if r.method == "DELETE"]
    order = [r.url.path.rsplit("/", 2)[-2:] for r in deletes]
    position = {tuple(o): i for i, o in enumerate(order)}
    for own in (("secrets", "istiod-blue-webhook-tls"), ("leases", "istiod-blue-leader")):
        for rbac in ("rolebindings", "roles", "clusterrolebindings", "clusterroles"):
            granting = [i for (kind, _), i in position.items() if kind == rbac]
            assert granting and max(granting) < position[own], (own, rbac, order)
    assert order[0][0] == "mutatingwebhookconfigurations"
    assert order[-1][0] == "secrets"  # the token, after its ServiceAccount
    deployment = next(r for r in deletes if "/deployments/" in r.url.path)
    assert deployment.params.get("propagationPolicy") == "Foreground"
    assert api.stored_names("v1/secrets", "istio-system") == set()


async def test_uninstall_in_a_permissive_cluster_says_the_lease_may_come_back(
    api: ApiServer, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another binding still lets the ServiceAccount write Leases: say so, finish anyway."""
    monkeypatch.setattr(installer, "DENIED_TIMEOUT_SECONDS", 0.0)
    api.allow_everything = True
    await _install(client, "blue")
    lines: list[str] = []
    await installer.uninstall(client, "blue", report=lines.append)
    warning = next(line for line in lines if line.startswith("warning: "))
    assert "system:serviceaccount:istio-system:istiod-blue may still write Leases" in warning
    assert api.stored_names("coordination.k8s.io/v1/leases", "istio-system") == set()
