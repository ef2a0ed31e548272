"""Keeping `caBundle` correct in every webhook configuration of one revision (leader only).

"Of one revision" means labelled `istio.io/rev=REV`: the revision's own configuration and every
tag pointing at it. They are patched at start, whenever one is created or edited (a watch),
and when the bundle changes, the way `webhook_patches` patches and follows them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from lightkube import AsyncClient

from sidemesh.kube import client as kube
from sidemesh.kube import webhook_patches
from sidemesh.kube.metrics import KubeMetrics
from sidemesh.kube.retry import DEFAULT_BACKOFF, Backoff, follow_forever

log = logging.getLogger("sidemesh.kube.cabundle")

MWC = kube.resource_type("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration")


def bundle_patch(configuration: Mapping[str, Any], bundle: str) -> dict[str, Any] | None:
    """The merge patch that puts `bundle` in every webhook of `configuration`, or None if
    they all carry it already."""

    def put(webhook: webhook_patches.Webhook) -> bool:
        client_config = webhook.setdefault("clientConfig", {})
        if client_config.get("caBundle") == bundle:
            return False
        client_config["caBundle"] = bundle
        return True

    return webhook_patches.webhooks_patch(configuration, put)


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
        if bundle is None or not webhook_patches.of_revision(configuration, self.revision):
            return False
        patch = bundle_patch(configuration, bundle)
        if patch is None:
            return False
        name = webhook_patches.configuration_name(configuration)
        if not await webhook_patches.apply_patch(self.client, MWC, name, patch):
            return False
        self.metrics.inc("sidemesh_webhook_ca_bundle_patches_total", configuration=name)
        log.info("caBundle of %s set", name)
        return True

    async def fix_all(self, bundle: str | None = None) -> int:
        """Patch every configuration of the revision that needs it; how many were patched."""
        patched = 0
        for configuration in await webhook_patches.revision_configurations(
            self.client, MWC, self.revision
        ):
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
        await webhook_patches.correct_on_every_event(
            self.client, MWC, self.revision, fix_all=self.fix_all, fix=self.fix, healthy=healthy
        )
