"""The webhook certificate's home: a Secret in istio-system, mirrored to the files the webhook
server serves from (its reloader picks up every change).

Every replica loads the Secret (creating it if no replica has yet: `create` is atomic, the
loser of a race reads the winner's) and follows it. Reissuing is a conditional update
(`resourceVersion`), done by the leader when the certificate is due.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError

from sidemesh.install import naming
from sidemesh.kube import client as kube
from sidemesh.kube.metrics import KubeMetrics
from sidemesh.kube.retry import DEFAULT_BACKOFF, Backoff, follow_forever
from sidemesh.kube.webhook_certs import (
    DEFAULT_POLICY,
    PREVIOUS_CA_KEY,
    CertPolicy,
    WebhookCertificates,
    issue,
    renew,
    renewal_reason,
)
from sidemesh.security.files import write_atomically

log = logging.getLogger("sidemesh.kube.certs")

SECRET = kube.resource_type("v1", "Secret")
Clock = Callable[[], datetime.datetime]


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)


class CertificateStore:
    def __init__(
        self,
        client: AsyncClient,
        *,
        revision: str,
        cert_file: Path,
        key_file: Path,
        metrics: KubeMetrics,
        policy: CertPolicy = DEFAULT_POLICY,
        clock: Clock = utc_now,
        namespace: str = naming.NAMESPACE,
    ) -> None:
        self.client = client
        self.revision = revision
        self.cert_file = cert_file
        self.key_file = key_file
        self.metrics = metrics
        self.policy = policy
        self.clock = clock
        self.namespace = namespace
        self.name = naming.webhook_secret_name(revision)
        self.current: WebhookCertificates | None = None
        self._resource_version: str | None = None
        self.changed = asyncio.Event()  # set whenever `current` changes

    # -- loading -------------------------------------------------------------------------

    async def ensure(self) -> WebhookCertificates:
        """Load the Secret (creating it if absent, fixing it if unusable) and write the files."""
        while True:
            secret = await kube.get(self.client, SECRET, self.name, self.namespace)
            if secret is None:
                certs = issue(self.revision, self.clock(), self.policy)
                try:
                    created = await self._create(certs)
                except ApiError as exc:
                    if kube.is_conflict(exc):
                        continue  # another replica created it first: use theirs
                    raise
                self.metrics.inc("sidemesh_webhook_cert_rotations_total")
                self._adopt(created, certs)
                return certs
            stored = WebhookCertificates.from_secret_data(secret.get("data"))
            if stored is None or self._unusable(stored):
                reason = "unreadable" if stored is None else self._unusable(stored)
                log.warning("webhook certificate Secret %s is unusable (%s); reissuing",
                            self.name, reason)  # fmt: skip
                fixed = issue(self.revision, self.clock(), self.policy)
                if not await self._update(secret, fixed):
                    continue  # changed under us: look again
                return fixed
            self._adopt(secret, stored)
            return stored

    def _unusable(self, certs: WebhookCertificates) -> str | None:
        """Unusable now (not merely due for renewal): wrong names, broken, or expired."""
        expired_policy = CertPolicy(
            ca_validity=self.policy.ca_validity,
            cert_validity=datetime.timedelta(0),
            renew_before=datetime.timedelta(0),
        )
        return renewal_reason(certs, self.revision, self.clock(), expired_policy)

    def _adopt(self, secret: dict[str, Any], certs: WebhookCertificates) -> None:
        self._resource_version = (secret.get("metadata") or {}).get("resourceVersion")
        if certs != self.current:
            self.current = certs
            self.write_files(certs)
            self.changed.set()

    def write_files(self, certs: WebhookCertificates) -> None:
        # Key first: the reloader checks the pair on a scratch context and retries, so a
        # moment where only one file is new is harmless either way.
        wrote_key = write_atomically(self.key_file, certs.key, 0o600)
        wrote_cert = write_atomically(self.cert_file, certs.cert, 0o644)
        if wrote_key or wrote_cert:
            self.metrics.inc("sidemesh_webhook_cert_file_writes_total")
            log.info("webhook serving certificate written to %s", self.cert_file)

    def _secret(self, certs: WebhookCertificates) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": naming.install_labels(self.revision),
            },
            "data": certs.secret_data(),
        }

    async def _create(self, certs: WebhookCertificates) -> dict[str, Any]:
        from lightkube.codecs import from_dict

        created = await self.client.create(from_dict(self._secret(certs)))
        return kube.as_dict(created)

    async def _update(self, secret: dict[str, Any], certs: WebhookCertificates) -> bool:
        """Conditional replace of the data; False if the Secret changed since `secret`."""
        data: dict[str, str | None] = dict(certs.secret_data())
        data.setdefault(PREVIOUS_CA_KEY, None)  # merge patch: null drops a stale previous CA
        patch = {
            "metadata": {"resourceVersion": secret["metadata"]["resourceVersion"]},
            "data": data,
        }
        try:
            updated = await kube.merge_patch(self.client, SECRET, self.name, patch, self.namespace)
        except ApiError as exc:
            if kube.is_conflict(exc):
                return False
            raise
        self.metrics.inc("sidemesh_webhook_cert_rotations_total")
        self._adopt(updated, certs)
        return True

    # -- following and rotating ------------------------------------------------------------

    async def follow(self, backoff: Backoff = DEFAULT_BACKOFF) -> None:
        """Mirror every change of the Secret into the files, forever (all replicas)."""
        await follow_forever(
            self._mirror, operation="watch secret", activity=f"watching Secret {self.name}",
            logger=log, metrics=self.metrics, backoff=backoff,
        )  # fmt: skip

    async def _mirror(self, healthy: Callable[[], None]) -> None:
        async for _, obj in self.client.watch(
            SECRET, namespace=self.namespace, fields={"metadata.name": self.name}
        ):
            secret = kube.as_dict(obj)
            if (secret.get("metadata") or {}).get("name") != self.name:
                continue
            certs = WebhookCertificates.from_secret_data(secret.get("data"))
            if certs is not None and not self._unusable(certs):
                self._adopt(secret, certs)
            healthy()

    def due(self) -> str | None:
        if self.current is None:
            return "no certificate loaded"
        return renewal_reason(self.current, self.revision, self.clock(), self.policy)

    async def rotate(self, publish_bundle: Callable[[str], Awaitable[None]]) -> bool:
        """Reissue if due (leader only). A new CA's bundle is published to the webhook
        configurations before any replica can serve a certificate it signed."""
        reason = self.due()
        if reason is None or self.current is None:
            return False
        secret = await kube.get(self.client, SECRET, self.name, self.namespace)
        if secret is None:
            await self.ensure()
            return True
        renewed = renew(self.current, self.revision, self.clock(), self.policy)
        if renewed.ca_bundle() != self.current.ca_bundle():
            await publish_bundle(renewed.ca_bundle())
        log.info("reissuing the webhook serving certificate: %s", reason)
        return await self._update(secret, renewed)
