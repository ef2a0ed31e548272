"""Applying a revision's install, and removing exactly that revision again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lightkube import AsyncClient

from sidemesh.api import names
from sidemesh.install import manifests, naming
from sidemesh.install.values import InstallValues
from sidemesh.kube import client as kube

Report = Callable[[str], None]


class InstallError(Exception):
    """The cluster is in a state this install/uninstall must not change; says what to do."""


MWC = ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration")

# What uninstall deletes (by the install label), webhook first: it fails closed, so it must
# not outlive the Deployment that answers it. Secret and Lease are the control plane's own.
UNINSTALL_KINDS: tuple[tuple[str, str, bool], ...] = (
    (*MWC, False),
    ("policy/v1", "PodDisruptionBudget", True),
    ("apps/v1", "Deployment", True),
    ("v1", "Service", True),
    ("v1", "ConfigMap", True),
    ("v1", "Secret", True),
    ("coordination.k8s.io/v1", "Lease", True),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", True),
    ("rbac.authorization.k8s.io/v1", "Role", True),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", False),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", False),
    ("v1", "ServiceAccount", True),
)


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


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
    selector = {naming.LABEL_INSTALL_REVISION: revision}
    deleted: list[str] = []
    for api_version, kind, namespaced in UNINSTALL_KINDS:
        res = kube.resource_type(api_version, kind)
        namespace = naming.NAMESPACE if namespaced else None
        for obj in await kube.list_objects(client, res, namespace=namespace, labels=selector):
            if _labels(obj).get(naming.LABEL_INSTALL_REVISION) != revision:
                continue  # never trust a selector with another revision's objects
            metadata = obj["metadata"]
            if await kube.delete(client, res, metadata["name"], metadata.get("namespace")):
                described = manifests.describe({"kind": kind, "metadata": metadata})
                deleted.append(described)
                report(f"deleted {described}")
    if not keep_namespace and not await _any_revision_left(client):
        namespace_obj = await kube.get(
            client, kube.resource_type("v1", "Namespace"), naming.NAMESPACE
        )
        if namespace_obj and _labels(namespace_obj).get(naming.LABEL_PART_OF) == naming.PART_OF:
            await kube.delete(client, kube.resource_type("v1", "Namespace"), naming.NAMESPACE)
            deleted.append(f"Namespace/{naming.NAMESPACE}")
            report(f"deleted Namespace/{naming.NAMESPACE} (no revision left)")
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
