"""Revision tags in a cluster: set (create or move), list, remove.

The tag's configuration copies the target revision's webhook settings and current caBundle,
so it works the moment it exists; it carries `istio.io/rev=<target>`, so the target's control
plane keeps its caBundle current from then on. Tag `default` also takes over the revision-less
entries, and the default revision's own configuration (if installed) is deactivated so two
webhooks never inject one pod; removing the tag reactivates it.
"""

from __future__ import annotations

import copy
from typing import Any

from lightkube import AsyncClient

from sidemesh.api import names
from sidemesh.inject.webhooks import revision_webhooks
from sidemesh.install import naming
from sidemesh.install.tags import TagError, TagInfo, check_tag, list_tags, settings_of
from sidemesh.install.tags import tag_configuration as build_tag_configuration
from sidemesh.install.webhooks import deactivated, is_deactivated
from sidemesh.kube import client as kube

_MWC = kube.resource_type("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration")
_NAMESPACE = kube.resource_type("v1", "Namespace")


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


async def set_tag(client: AsyncClient, tag: str, revision: str, *, overwrite: bool = False) -> str:
    """Create the tag or move it to `revision`; returns what was done."""
    check_tag(tag)
    target = await kube.get(client, _MWC, names.webhook_configuration_name(revision))
    if target is None or naming.LABEL_INSTALL_REVISION not in _labels(target):
        raise TagError(
            f"revision {revision} is not installed (no MutatingWebhookConfiguration "
            f"{names.webhook_configuration_name(revision)}); install it first: "
            f"sidemesh install --revision {revision}"
        )
    if tag != "default":
        clash = await kube.get(client, _MWC, names.webhook_configuration_name(tag))
        if clash is not None:
            raise TagError(
                f"{tag} is the name of an installed revision; a tag with the same name would "
                f"make two webhooks answer {names.LABEL_REVISION}={tag}"
            )
    name = naming.tag_configuration_name(tag)
    existing = await kube.get(client, _MWC, name)
    previous = _labels(existing).get(names.LABEL_REVISION) if existing else None
    if existing is not None and previous != revision and not overwrite:
        raise TagError(
            f"tag {tag} already points at revision {previous}; moving it re-points injection "
            f"for every namespace labelled {names.LABEL_REVISION}={tag} (on their next pod "
            f"restart). Repeat with --overwrite to move it."
        )
    settings = settings_of(target, names.service_name(revision))
    configuration = build_tag_configuration(tag, revision, settings)
    await kube.apply(client, configuration)
    if tag == "default":
        await _set_default_revision_active(client, active=False)
    if existing is None:
        return f"tag {tag} created, pointing at revision {revision}"
    if previous == revision:
        return f"tag {tag} already points at revision {revision} (updated)"
    return f"tag {tag} moved from revision {previous} to {revision}; restart workloads to re-inject"


async def remove_tag(client: AsyncClient, tag: str) -> tuple[str, tuple[str, ...]]:
    """Delete the tag; returns what was done and the namespaces that selected it."""
    name = naming.tag_configuration_name(tag)
    existing = await kube.get(client, _MWC, name)
    if existing is None or names.LABEL_TAG not in _labels(existing):
        raise TagError(f"no tag named {tag} (no MutatingWebhookConfiguration {name})")
    info = (await get_tags(client, only=[existing]))[0]
    await kube.delete(client, _MWC, name)
    if tag == "default":
        await _set_default_revision_active(client, active=True)
    return f"tag {tag} (revision {info.revision}) removed", info.namespaces


async def get_tags(
    client: AsyncClient, *, only: list[dict[str, Any]] | None = None
) -> list[TagInfo]:
    configurations = only
    if configurations is None:
        configurations = await kube.list_objects(client, _MWC, labels={names.LABEL_TAG: None})
    namespaces = await kube.list_objects(client, _NAMESPACE)
    return list_tags(configurations, namespaces)


async def _set_default_revision_active(client: AsyncClient, *, active: bool) -> None:
    """Deactivate (or restore) the entries of the default revision's own configuration."""
    name = names.webhook_configuration_name("default")
    current = await kube.get(client, _MWC, name)
    if current is None or is_deactivated(current) != active:
        return  # not installed, or already as wanted
    if active:
        fresh = {e.name: e for e in revision_webhooks("default", default=True)}
        webhooks = copy.deepcopy(current.get("webhooks") or [])
        for item in webhooks:
            entry = fresh.get(item.get("name"))
            if entry is not None:
                item["namespaceSelector"] = entry.namespace_selector.to_kubernetes()
                item["objectSelector"] = entry.object_selector.to_kubernetes()
    else:
        webhooks = deactivated(current)["webhooks"]
    patch = {
        "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
        "webhooks": webhooks,
    }
    await kube.merge_patch(client, _MWC, name, patch)
