"""Applying a revision's install, and removing exactly that revision again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from lightkube import AsyncClient
from lightkube.codecs import from_dict
from lightkube.core.exceptions import ApiError
from lightkube.types import CascadeType

from sidemesh.api import names
from sidemesh.install import manifests, naming
from sidemesh.install.values import InstallValues
from sidemesh.kube import client as kube

Report = Callable[[str], None]


class InstallError(Exception):
    """The cluster is in a state this install/uninstall must not change; says what to do."""


MWC = ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration")
VWC = ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration")

# What uninstall deletes (by the install label), in this order. The webhooks first: they fail
# closed, so it must not outlive the Deployment that answers it. The Deployment and Service with
# their dependents (ReplicaSets, pods, EndpointSlices), waited for: a terminating istiod gives
# its Lease up. Then the RBAC that lets the control plane write, and only after it the Secret
# and Lease that the control plane writes itself: a discovery that still runs (anywhere) can no
# longer recreate them. The ServiceAccount last, with the token Secret Kubernetes made for it.
# (api_version, kind, namespaced, wait): `wait` deletes in the foreground and waits until gone.
UNINSTALL_KINDS: tuple[tuple[str, str, bool, bool], ...] = (
    (*MWC, False, False),
    (*VWC, False, False),
    ("policy/v1", "PodDisruptionBudget", True, False),
    ("apps/v1", "Deployment", True, True),
    ("apps/v1", "ReplicaSet", True, True),
    ("v1", "Pod", True, True),
    ("v1", "Service", True, True),
    ("v1", "Endpoints", True, False),
    ("discovery.k8s.io/v1", "EndpointSlice", True, False),
    ("v1", "ConfigMap", True, False),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", True, False),
    ("rbac.authorization.k8s.io/v1", "Role", True, False),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", False, False),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", False, False),
    ("v1", "Secret", True, False),
    ("coordination.k8s.io/v1", "Lease", True, False),
    ("v1", "ServiceAccount", True, False),
)
# Kinds an install also creates outside istio-system: the Role and RoleBinding that let the
# control plane read gateway credential Secrets in each `gateways.credentialNamespaces`
# namespace (`install.rbac.credential_readers`). Listed in every namespace, by the labels,
# since the values naming those namespaces may have changed since the install.
EVERY_NAMESPACE_KINDS = frozenset({"Role", "RoleBinding"})
# Objects the cluster derives from ours (pods, endpoints) carry our labels but are not reported.
DERIVED_KINDS = frozenset({"ReplicaSet", "Pod", "Endpoints", "EndpointSlice"})
GONE_TIMEOUT_SECONDS = 120.0  # a terminating istiod pod has 30 s of grace by default
DENIED_TIMEOUT_SECONDS = 10.0  # the authorizer's RBAC cache lags by milliseconds
POLL_SECONDS = 0.25
TOKEN_TYPE = "kubernetes.io/service-account-token"
TOKEN_ACCOUNT = "kubernetes.io/service-account.name"


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def _ours(obj: dict[str, Any], revision: str) -> bool:
    """Made for `revision`: its install label; outside istio-system (where others' objects
    live) also sidemesh's part-of label, both of which `install.rbac` puts there."""
    labels = _labels(obj)
    if labels.get(naming.LABEL_INSTALL_REVISION) != revision:
        return False
    namespace = (obj.get("metadata") or {}).get("namespace")
    return namespace in (None, naming.NAMESPACE) or (
        labels.get(naming.LABEL_PART_OF) == naming.PART_OF
    )


async def _webhook_configuration(client: AsyncClient, name: str) -> dict[str, Any] | None:
    return await kube.get(client, kube.resource_type(*MWC), name)


async def preflight(client: AsyncClient, revision: str) -> bool:
    """Refuse a revision named like an existing tag; returns whether a `default` tag exists."""
    if revision not in ("", "default"):
        clash = await _webhook_configuration(client, naming.tag_configuration_name(revision))
        if clash is not None:
            raise InstallError(
                f"a revision tag named {revision!r} exists; a revision with the same name would "
                f"make two webhooks answer {names.LABEL_REVISION}={revision}. Choose another "
                f"revision name, or remove the tag: sidemesh tag remove {revision}"
            )
        return False
    return (
        await _webhook_configuration(client, naming.tag_configuration_name("default")) is not None
    )


async def install(
    client: AsyncClient, values: InstallValues, revision: str, *, report: Report = print
) -> list[dict[str, Any]]:
    """Apply every object of the revision in dependency order; returns the live objects."""
    default_tag_exists = await preflight(client, revision)
    objects = manifests.render(values, revision, default_tag_exists=default_tag_exists)
    applied = []
    for obj in objects:
        foreign = await _foreign_definition(client, obj)
        if foreign is not None:
            # Istio's base chart (or another mesh) owns it: taking its fields over with a
            # forced apply could change its schema or storage version under its objects.
            applied.append(foreign)
            report(f"kept {manifests.describe(obj)}: it exists and was not installed by sidemesh")
            continue
        applied.append(await kube.apply(client, obj))
        report(f"applied {manifests.describe(obj)}")
    return applied


async def _foreign_definition(client: AsyncClient, obj: dict[str, Any]) -> dict[str, Any] | None:
    """The live CRD `obj` would overwrite, if it exists and is not ours; else None."""
    if obj["kind"] != "CustomResourceDefinition":
        return None
    live = await kube.get(
        client, kube.resource_type(obj["apiVersion"], obj["kind"]), obj["metadata"]["name"]
    )
    if live is None or _labels(live).get(naming.LABEL_PART_OF) == naming.PART_OF:
        return None
    return live


async def tags_pointing_at(client: AsyncClient, revision: str) -> list[str]:
    configurations = await kube.list_objects(
        client, kube.resource_type(*MWC), labels={names.LABEL_REVISION: revision}
    )
    return sorted(
        _labels(c)[names.LABEL_TAG] for c in configurations if names.LABEL_TAG in _labels(c)
    )


async def uninstall(
    client: AsyncClient, revision: str, *, keep_namespace: bool = False, report: Report = print
) -> list[str]:
    """Delete what the install (and the control plane) created for `revision`, found by the
    install label; then the namespace, once no revision is left in it."""
    revision = naming.revision_label(revision)
    tags = await tags_pointing_at(client, revision)
    if tags:
        listed = ", ".join(tags)
        raise InstallError(
            f"revision {revision} is the target of tag(s) {listed}; uninstalling it would leave "
            "webhooks that fail every pod they select. Move or remove them first: "
            f"sidemesh tag set {tags[0]} --revision OTHER --overwrite, or sidemesh tag remove "
            f"{tags[0]}"
        )
    deleted: list[str] = []
    # A second pass catches what a controller recreated from a cache that had not yet seen
    # the first (an Endpoints object, say); by then every owner is gone.
    for _ in range(3):
        removed = await _delete_revision_objects(client, revision, report=report)
        deleted += removed
        if not removed:
            break
    if not keep_namespace and not await _any_revision_left(client):
        namespace_obj = await kube.get(
            client, kube.resource_type("v1", "Namespace"), naming.NAMESPACE
        )
        if namespace_obj and _labels(namespace_obj).get(naming.LABEL_PART_OF) == naming.PART_OF:
            await kube.delete(client, kube.resource_type("v1", "Namespace"), naming.NAMESPACE)
            deleted.append(f"Namespace/{naming.NAMESPACE}")
            report(f"deleted Namespace/{naming.NAMESPACE} (no revision left)")
    return deleted


async def _delete_revision_objects(
    client: AsyncClient, revision: str, *, report: Report
) -> list[str]:
    selector = {naming.LABEL_INSTALL_REVISION: revision}
    deleted: list[str] = []
    accounts: list[str] = []
    for api_version, kind, namespaced, wait in UNINSTALL_KINDS:
        res = kube.resource_type(api_version, kind)
        namespace = naming.NAMESPACE if namespaced and kind not in EVERY_NAMESPACE_KINDS else None
        for obj in await kube.list_objects(client, res, namespace=namespace, labels=selector):
            if not _ours(obj, revision):
                continue  # never trust a selector with another revision's (or owner's) objects
            metadata = obj["metadata"]
            name, obj_namespace = metadata["name"], metadata.get("namespace")
            cascade = CascadeType.FOREGROUND if wait else None
            if not await kube.delete(client, res, name, obj_namespace, cascade=cascade):
                continue
            described = manifests.describe({"kind": kind, "metadata": metadata})
            if wait:
                await _wait_until_gone(client, res, name, obj_namespace, described)
            if kind == "ServiceAccount":
                accounts.append(name)
            if kind == "ClusterRole":
                await _wait_until_denied(client, revision, report=report)
            if kind not in DERIVED_KINDS:
                deleted.append(described)
                report(f"deleted {described}")
    deleted += await _delete_account_tokens(client, accounts, report=report)
    return deleted


async def _wait_until_gone(
    client: AsyncClient, res: Any, name: str, namespace: str | None, described: str
) -> None:
    """Foreground deletion keeps the object until its dependents are deleted: wait for that."""
    deadline = time.monotonic() + GONE_TIMEOUT_SECONDS
    while await kube.get(client, res, name, namespace) is not None:
        if time.monotonic() > deadline:
            raise InstallError(
                f"{described} is still being deleted after {GONE_TIMEOUT_SECONDS:.0f} s (its "
                "pods terminating, or a finalizer nobody removes); run uninstall again once it "
                "is gone: kubectl get -n istio-system pods,replicasets"
            )
        await asyncio.sleep(POLL_SECONDS)


async def _wait_until_denied(client: AsyncClient, revision: str, *, report: Report) -> None:
    """Until the API server's authorizer (which reads RBAC from a cache) has seen the RBAC go:
    only then can the control plane no longer write what is deleted next. Bounded: another
    binding (a permissive dev cluster) may keep granting it, which is said, not fatal."""
    account = f"system:serviceaccount:{naming.NAMESPACE}:{naming.service_account_name(revision)}"
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": account,
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{naming.NAMESPACE}"],
            "resourceAttributes": {
                "namespace": naming.NAMESPACE,
                "verb": "create",
                "group": "coordination.k8s.io",
                "resource": "leases",
            },
        },
    }
    deadline = time.monotonic() + DENIED_TIMEOUT_SECONDS
    while True:
        try:
            answer = kube.as_dict(await client.create(from_dict(review)))
        except ApiError as exc:  # e.g. not allowed to ask: go on without the check
            report(f"warning: cannot check {account}'s access: {kube.describe_error(exc)}")
            return
        if not (answer.get("status") or {}).get("allowed"):
            return
        if time.monotonic() > deadline:
            report(
                f"warning: {account} may still write Leases after its Role was deleted (another "
                "binding grants it); a control plane of this revision still running may recreate "
                f"its Lease. Check: kubectl auth can-i --list --as {account}"
            )
            return
        await asyncio.sleep(POLL_SECONDS)


async def _delete_account_tokens(
    client: AsyncClient, accounts: list[str], *, report: Report
) -> list[str]:
    """The token Secrets Kubernetes (before 1.24's cleanup) made for the ServiceAccounts; the
    token controller removes them too, but not before uninstall returns."""
    if not accounts:
        return []
    res = kube.resource_type("v1", "Secret")
    deleted = []
    for secret in await kube.list_objects(client, res, namespace=naming.NAMESPACE):
        metadata = secret.get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        if secret.get("type") != TOKEN_TYPE or annotations.get(TOKEN_ACCOUNT) not in accounts:
            continue
        if await kube.delete(client, res, metadata["name"], naming.NAMESPACE):
            described = manifests.describe({"kind": "Secret", "metadata": metadata})
            deleted.append(described)
            report(f"deleted {described}")
    return deleted


async def _any_revision_left(client: AsyncClient) -> bool:
    exists = {naming.LABEL_INSTALL_REVISION: None}
    for api_version, kind, namespaced in (("apps/v1", "Deployment", True), (*MWC, False)):
        found = await kube.list_objects(
            client,
            kube.resource_type(api_version, kind),
            namespace=naming.NAMESPACE if namespaced else None,
            labels=exists,
        )
        if any(naming.LABEL_INSTALL_REVISION in _labels(o) for o in found):
            return True
    return False
