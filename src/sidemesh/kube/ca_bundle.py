"""Keeping `caBundle` correct in every webhook configuration of one revision (leader only).

"Of one revision" means labelled `istio.io/rev=REV`: the revision's own configuration and every
tag pointing at it. They are patched at start, whenever one is created or edited (a watch),
and when the bundle changes. The patch is a merge patch of the whole `webhooks` list carrying
the `resourceVersion` it was computed from, so a concurrent edit makes it fail (409) rather
than be overwritten; the next event recomputes it.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError

from sidemesh.api import names
from sidemesh.kube import client as kube
from sidemesh.kube.metrics import KubeMetrics
from sidemesh.kube.retry import DEFAULT_BACKOFF, Backoff, follow_forever

log = logging.getLogger("sidemesh.kube.cabundle")

MWC = kube.resource_type("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration")


def bundle_patch(configuration: Mapping[str, Any], bundle: str) -> dict[str, Any] | None:
    """The merge patch that puts `bundle` in every webhook of `configuration`, or None if
    they all carry it already."""
    webhooks = copy.deepcopy(list(configuration.get("webhooks") or []))
    changed = False
    for item in webhooks:
        client_config = item.setdefault("clientConfig", {})
        if client_config.get("caBundle") != bundle:
            client_config["caBundle"] = bundle
            changed = True
    if not changed:
        return None
    version = (configuration.get("metadata") or {}).get("resourceVersion")
    return {"metadata": {"resourceVersion": version}, "webhooks": webhooks}


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _selected(obj: Mapping[str, Any], revision: str) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(names.LABEL_REVISION) == revision)


class BundleKeeper:
    def __init__(
        self,
        client: AsyncClient,
        *,
        revision: str,
        bundle: Callable[[], str | None],
        metrics: KubeMetrics,
    ) -> None:
        self.client = client
        self.revision = revision
        self.bundle = bundle  # the bundle to publish now (None: nothing loaded yet)
        self.metrics = metrics

    async def fix(self, configuration: Mapping[str, Any], bundle: str | None = None) -> bool:
        """Patch one configuration if its bundle is wrong; True if it was patched."""
        bundle = bundle or self.bundle()
        if bundle is None or not _selected(configuration, self.revision):
            return False
        patch = bundle_patch(configuration, bundle)
        if patch is None:
            return False
        name = _name(configuration)
        try:
            await kube.merge_patch(self.client, MWC, name, patch)
        except ApiError as exc:
            if kube.is_conflict(exc) or kube.is_not_found(exc):
                return False  # edited or deleted meanwhile; its event brings us back
            raise
        self.metrics.inc("sidemesh_webhook_ca_bundle_patches_total", configuration=name)
        log.info("caBundle of %s set", name)
        return True

    async def fix_all(self, bundle: str | None = None) -> int:
        """Patch every configuration of the revision that needs it; how many were patched."""
        configurations = await kube.list_objects(
            self.client, MWC, labels={names.LABEL_REVISION: self.revision}
        )
        patched = 0
        for configuration in configurations:
            if await self.fix(configuration, bundle):
                patched += 1
        return patched

    async def follow(self, backoff: Backoff = DEFAULT_BACKOFF) -> None:
        """Watch the revision's configurations and correct each event, forever."""
        await follow_forever(
            self._correct, operation="watch webhooks", activity="keeping caBundle current",
            logger=log, metrics=self.metrics, backoff=backoff,
        )  # fmt: skip

    async def _correct(self, healthy: Callable[[], None]) -> None:
        await self.fix_all()
        async for kind, obj in self.client.watch(MWC, labels={names.LABEL_REVISION: self.revision}):
            if kind != "DELETED":
                await self.fix(kube.as_dict(obj))
            healthy()
