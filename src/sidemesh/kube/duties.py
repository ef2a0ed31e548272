"""What the control plane does in a cluster besides answering webhooks.

Every replica: load (or create) the webhook certificate Secret, write the serving pair to the
files the webhook server reloads, and follow the Secret. The leader only (one Lease per
revision): keep `caBundle` correct in the revision's webhook configurations, and reissue the
serving certificate well before it expires.

`run_cluster_duties` is the async entry point; `start_cluster_duties` runs it on a thread of
its own for `sidemesh discovery --kube`, whose webhook server owns the main thread's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from lightkube import AsyncClient

from sidemesh.install import naming
from sidemesh.kube.ca_bundle import BundleKeeper
from sidemesh.kube.cert_store import CertificateStore, Clock, utc_now
from sidemesh.kube.client import make_client
from sidemesh.kube.leader import DEFAULT_TIMINGS, LeaderElector, LeaseTimings
from sidemesh.kube.metrics import KUBE_METRICS, KubeMetrics
from sidemesh.kube.retry import DEFAULT_BACKOFF, Backoff, retry_forever
from sidemesh.kube.validator_keeper import ValidatorKeeper
from sidemesh.kube.webhook_certs import DEFAULT_POLICY, CertPolicy

log = logging.getLogger("sidemesh.kube.duties")


def default_identity() -> str:
    """The pod name (unique among replicas), else host name plus a random suffix."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


# A leader-only duty: runs until cancelled (when leadership is lost), with the duties' client.
LeaderDuty = Callable[[AsyncClient, KubeMetrics], Awaitable[None]]


@dataclass(frozen=True)
class DutySettings:
    revision: str
    cert_file: Path
    key_file: Path
    namespace: str = naming.NAMESPACE
    identity: str = field(default_factory=default_identity)
    lease: LeaseTimings = DEFAULT_TIMINGS
    policy: CertPolicy = DEFAULT_POLICY
    rotation_check_seconds: float = 60.0
    backoff: Backoff = DEFAULT_BACKOFF
    kubeconfig: Path | None = None  # None: in-cluster service account (or $KUBECONFIG)
    # More leader-only duties, handed in by the command that runs discovery (the stale-sidecar
    # restarter when `sidecarRestarter.enabled`); each runs while this replica leads.
    leader_extras: tuple[LeaderDuty, ...] = ()


async def run_cluster_duties(
    settings: DutySettings,
    *,
    client: AsyncClient | None = None,
    metrics: KubeMetrics = KUBE_METRICS,
    certificates_ready: asyncio.Event | None = None,
    clock: Clock = utc_now,
    elector_ready: asyncio.Future[LeaderElector] | None = None,
) -> None:
    """Run until cancelled; API outages are retried with backoff, never fatal."""
    own_client = client is None
    if client is None:
        client = make_client(settings.kubeconfig, field_manager=f"{naming.FIELD_MANAGER}-discovery")
    revision = naming.revision_label(settings.revision)
    store = CertificateStore(
        client, revision=revision, cert_file=settings.cert_file, key_file=settings.key_file,
        metrics=metrics, policy=settings.policy, clock=clock, namespace=settings.namespace,
    )  # fmt: skip
    elector = LeaderElector(
        client, name=naming.leader_lease_name(revision), namespace=settings.namespace,
        identity=settings.identity, metrics=metrics, timings=settings.lease,
        labels=naming.install_labels(revision),
    )  # fmt: skip
    if elector_ready is not None:
        elector_ready.set_result(elector)
    keeper = BundleKeeper(
        client,
        revision=revision,
        bundle=lambda: store.current.ca_bundle() if store.current else None,
        metrics=metrics,
    )

    validator = ValidatorKeeper(
        client, revision=revision, bundle=keeper.bundle, metrics=metrics, backoff=settings.backoff
    )

    async def publish(bundle: str) -> None:
        await _publish(keeper, bundle)
        await validator.fix_all(close=False)

    async def rotate_when_due() -> None:
        while True:
            await retry_forever(
                "reissue webhook certificate",
                lambda: store.rotate(publish_bundle=publish),
                backoff=settings.backoff,
                metrics=metrics,
            )
            await asyncio.sleep(settings.rotation_check_seconds)

    async def leader_duties() -> None:
        extras = [duty(client, metrics) for duty in settings.leader_extras]
        await asyncio.gather(
            keeper.follow(settings.backoff), rotate_when_due(), validator.follow(), *extras
        )

    try:
        await retry_forever(
            "load webhook certificate", store.ensure, backoff=settings.backoff, metrics=metrics
        )
        if certificates_ready is not None:
            certificates_ready.set()
        await asyncio.gather(store.follow(settings.backoff), elector.run(leader_duties))
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(elector.release())
        if own_client:
            await client.close()


async def _publish(keeper: BundleKeeper, bundle: str) -> None:
    await keeper.fix_all(bundle)


@dataclass
class ClusterDuties:
    """Handle on duties running in a background thread."""

    thread: threading.Thread
    loop: asyncio.AbstractEventLoop
    task: asyncio.Task[None]

    def stop(self, timeout: float = 5.0) -> None:
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(timeout)


def start_cluster_duties(
    settings: DutySettings, *, wait_seconds: float | None = None
) -> ClusterDuties:
    """Start the duties on a daemon thread; return once the certificate files are written.

    Waits as long as it takes (`wait_seconds=None`): the webhook cannot serve without them,
    and an API server that is briefly away is retried, not fatal.
    """
    started = threading.Event()
    ready = threading.Event()
    handle: dict[str, object] = {}

    def main() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        event = asyncio.Event()

        async def signal_ready() -> None:
            await event.wait()
            ready.set()

        task = loop.create_task(run_cluster_duties(settings, certificates_ready=event))
        signaller = loop.create_task(signal_ready())
        handle.update(loop=loop, task=task, signaller=signaller)
        started.set()
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(task)
        loop.close()

    thread = threading.Thread(target=main, name="sidemesh-cluster-duties", daemon=True)
    thread.start()
    started.wait()
    if not ready.wait(wait_seconds):
        log.warning("webhook certificate not ready after %ss; continuing to wait", wait_seconds)
    loop = handle["loop"]
    task = handle["task"]
    assert isinstance(loop, asyncio.AbstractEventLoop) and isinstance(task, asyncio.Task)
    return ClusterDuties(thread=thread, loop=loop, task=task)
