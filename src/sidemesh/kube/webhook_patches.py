"""Correcting the webhook configurations of one revision (leader only): the one way the
caBundle keeper (`ca_bundle`, mutating) and the validator keeper (`validator_keeper`,
validating) find, patch and follow them.

"Of one revision" means labelled `istio.io/rev=REV`. A patch is a merge patch of the whole
`webhooks` list carrying the `resourceVersion` it was computed from, so a concurrent edit makes
it fail (409) rather than be overwritten; the edit's own watch event then recomputes it.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError

from sidemesh.api import names
from sidemesh.kube import client as kube

Webhook = dict[str, Any]


def configuration_name(configuration: Mapping[str, Any]) -> str:
    return str((configuration.get("metadata") or {}).get("name", ""))


def of_revision(configuration: Mapping[str, Any], revision: str) -> bool:
    labels = (configuration.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(names.LABEL_REVISION) == revision)


def webhooks_patch(
    configuration: Mapping[str, Any], change: Callable[[Webhook], bool]
) -> dict[str, Any] | None:
    """The merge patch after `change` edited each webhook of `configuration` (a copy; it says
    whether it changed that one), or None when it changed none."""
    webhooks: list[Webhook] = copy.deepcopy(list(configuration.get("webhooks") or []))
    changed = [change(item) for item in webhooks]  # every webhook, even after the first change
    if not any(changed):
        return None
    version = (configuration.get("metadata") or {}).get("resourceVersion")
    return {"metadata": {"resourceVersion": version}, "webhooks": webhooks}


async def apply_patch(
    client: AsyncClient, resource: Any, name: str, patch: Mapping[str, Any]
) -> bool:
    """Merge-patch one configuration; False when it was edited (409) or deleted (404)
    meanwhile: its watch event brings the caller back."""
    try:
        await kube.merge_patch(client, resource, name, patch)
    except ApiError as exc:
        if kube.is_conflict(exc) or kube.is_not_found(exc):
            return False
        raise
    return True


async def revision_configurations(
    client: AsyncClient, resource: Any, revision: str
) -> list[dict[str, Any]]:
    return await kube.list_objects(client, resource, labels={names.LABEL_REVISION: revision})


async def correct_on_every_event(
    client: AsyncClient,
    resource: Any,
    revision: str,
    *,
    fix_all: Callable[[], Awaitable[object]],
    fix: Callable[[dict[str, Any]], Awaitable[object]],
    healthy: Callable[[], None],
) -> None:
    """Correct every configuration of the revision, then each one again as it is created or
    edited (one `follow_forever` round: returns or raises when the watch ends)."""
    await fix_all()
    async for kind, obj in client.watch(resource, labels={names.LABEL_REVISION: revision}):
        if kind != "DELETED":
            await fix(kube.as_dict(obj))
        healthy()
