"""Keeping the revision's ValidatingWebhookConfiguration trusted and, once it works, closed
(leader only).

Install creates `istio-validator[-REV]-istio-system` with `failurePolicy: Ignore` and no
caBundle: a configuration write must not fail just because no control plane answers yet. The
leader then, as Istio's validation controller does:

1. puts the serving CA bundle in (the same merge patch `ca_bundle` computes for the injector);
2. proves the webhook is reachable and refusing: a server-side dry run (nothing is stored) of an
   invalid Gateway must come back denied by the webhook, with the webhook's own words;
3. only then patches `failurePolicy: Fail`, so from here on an invalid object can never slip in
   while the webhook is briefly away.

It watches the configurations (labelled `istio.io/rev=REV`) and repeats this on every event, so
an `install` that re-applies `Ignore` is closed again. The probe is retried with backoff until it
succeeds; while it does not, the webhook stays open, and the log says why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

from lightkube import AsyncClient
from lightkube.codecs import from_dict
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource

from sidemesh.api import names
from sidemesh.install import naming
from sidemesh.kube import client as kube
from sidemesh.kube import webhook_patches
from sidemesh.kube.ca_bundle import bundle_patch
from sidemesh.kube.metrics import KubeMetrics
from sidemesh.kube.retry import DEFAULT_BACKOFF, Backoff, follow_forever

log = logging.getLogger("sidemesh.kube.validator")

VWC = kube.resource_type("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration")
PROBE_NAME: Final = "sidemesh-validation-readiness-probe"
# The words the API server puts before a webhook's refusal.
DENIED_BY_WEBHOOK: Final = "denied the request"
# What the probe's invalid Gateway must be refused for (the webhook's own check, not the
# CRD schema, which runs earlier and would refuse a malformed object without asking us).
PROBE_PROBLEM: Final = "gateway must have at least one server"


def probe_gateway(revision: str) -> dict[str, Any]:
    """An invalid Gateway only the webhook refuses (it passes the CRD schema), selected by the
    revision's validator (`istio.io/rev`)."""
    labels = {} if revision in ("", "default") else {names.LABEL_REVISION: revision}
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": PROBE_NAME, "namespace": naming.NAMESPACE, "labels": labels},
        "spec": {"servers": []},
    }


def close_patch(configuration: Mapping[str, Any]) -> dict[str, Any] | None:
    """The merge patch that turns every webhook of `configuration` to `failurePolicy: Fail`,
    or None if they all are."""

    def close(webhook: webhook_patches.Webhook) -> bool:
        if webhook.get("failurePolicy") == "Fail":
            return False
        webhook["failurePolicy"] = "Fail"
        return True

    return webhook_patches.webhooks_patch(configuration, close)


def refused_by_webhook(message: str) -> bool:
    """Whether the API server's answer to the probe is the webhook refusing it."""
    return DENIED_BY_WEBHOOK in message and PROBE_PROBLEM in message


def _is_ours(obj: Mapping[str, Any], revision: str) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return (
        webhook_patches.of_revision(obj, revision)
        and labels.get(naming.LABEL_INSTALL_REVISION) == revision
    )


class ValidatorKeeper:
    def __init__(
        self,
        client: AsyncClient,
        *,
        revision: str,
        bundle: Callable[[], str | None],
        metrics: KubeMetrics,
        backoff: Backoff = DEFAULT_BACKOFF,
    ) -> None:
        self.client = client
        self.revision = revision
        self.bundle = bundle
        self.metrics = metrics
        self.backoff = backoff

    async def probe(self) -> str | None:
        """None when the webhook refused the invalid Gateway; otherwise what happened."""
        # Registers the kind with lightkube (idempotent), so from_dict can build it.
        create_namespaced_resource("networking.istio.io", "v1", "Gateway", "gateways")
        try:
            await self.client.create(from_dict(probe_gateway(self.revision)), dry_run=True)
        except ApiError as exc:
            message = str(exc.status.message or exc)
            return None if refused_by_webhook(message) else message
        return "the API server accepted an invalid Gateway (the webhook did not refuse it)"

    async def fix(self, configuration: Mapping[str, Any], *, close: bool = True) -> bool:
        """Bundle in, then (once the webhook is proven to refuse, unless `close` is False)
        Fail; True if patched."""
        if not _is_ours(configuration, self.revision):
            return False
        bundle = self.bundle()
        if bundle is None:
            return False
        name = webhook_patches.configuration_name(configuration)
        patch = bundle_patch(configuration, bundle)
        if patch is not None:
            return await self._patch(name, patch, "caBundle")  # its event brings us back
        patch = close_patch(configuration)
        if patch is None or not close:
            return False
        await self._until_refusing(name)
        return await self._patch(name, patch, "failurePolicy Fail")

    async def _until_refusing(self, name: str) -> None:
        delays = self.backoff.delays()
        while (problem := await self.probe()) is not None:
            delay = next(delays)
            log.warning(
                "%s stays failurePolicy Ignore: the validation webhook does not refuse an "
                "invalid object yet (%s); checking again in %.1fs",
                name, problem, delay,
            )  # fmt: skip
            await asyncio.sleep(delay)

    async def _patch(self, name: str, patch: dict[str, Any], what: str) -> bool:
        if not await webhook_patches.apply_patch(self.client, VWC, name, patch):
            return False
        if what == "caBundle":
            self.metrics.inc("sidemesh_webhook_ca_bundle_patches_total", configuration=name)
        log.info("%s of %s set", what, name)
        return True

    async def fix_all(self, *, close: bool = True) -> None:
        """Every configuration of the revision; `close=False` only renews the bundle (a
        rotation must not wait for the probe)."""
        for configuration in await webhook_patches.revision_configurations(
            self.client, VWC, self.revision
        ):
            await self.fix(configuration, close=close)

    async def follow(self) -> None:
        """Watch the revision's validator configuration and correct each event, forever."""
        await follow_forever(
            self._correct, operation="watch validating webhooks",
            activity="keeping the validating webhook current", logger=log,
            metrics=self.metrics, backoff=self.backoff,
        )  # fmt: skip

    async def _correct(self, healthy: Callable[[], None]) -> None:
        await webhook_patches.correct_on_every_event(
            self.client, VWC, self.revision, fix_all=self.fix_all, fix=self.fix, healthy=healthy
        )
