"""Running the control plane's cluster duties against the in-memory API, with short timings."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from cluster_emulator import ApiServer
from lightkube import AsyncClient, KubeConfig
from lightkube.config.models import Cluster, User

from sidemesh.kube.duties import DutySettings, run_cluster_duties
from sidemesh.kube.leader import LeaderElector, LeaseTimings
from sidemesh.kube.metrics import KubeMetrics
from sidemesh.kube.retry import Backoff

# Lease rules are tested on a controllable clock (test_leader_rules.py); here the duties run
# in real time, so a renewal may be late on a loaded machine by well over a second without the
# leader stepping down (only the crash test waits a whole lease out).
FAST_LEASE = LeaseTimings(lease_duration=3.0, renew_deadline=2.0, retry_period=0.1)
FAST_BACKOFF = Backoff(initial=0.05, maximum=0.2)


async def eventually(predicate: Callable[[], bool], *, timeout: float = 10.0) -> None:
    """Wait until `predicate()` holds; fail after `timeout` (a bound, not a measurement)."""

    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


def client_for(api: ApiServer, field_manager: str) -> AsyncClient:
    config = KubeConfig.from_one(cluster=Cluster(server=str(api.url)), user=User())
    return AsyncClient(config=config, field_manager=field_manager)


@dataclass
class Replica:
    identity: str
    settings: DutySettings
    metrics: KubeMetrics
    client: AsyncClient
    task: asyncio.Task[None]
    elector: LeaderElector
    ready: asyncio.Event

    async def crash(self) -> None:
        """Stop without releasing the lease (a killed pod)."""
        self.elector.release = _no_release  # type: ignore[method-assign]
        await self.stop()

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def _no_release() -> None:
    return None


@contextlib.asynccontextmanager
async def replica(
    api: ApiServer, tmp_path: Path, identity: str, *, revision: str = "blue"
) -> AsyncIterator[Replica]:
    """One control-plane replica's duties, with its own client (field manager = identity)."""
    directory = tmp_path / identity
    settings = DutySettings(
        revision=revision, cert_file=directory / "tls.crt", key_file=directory / "tls.key",
        identity=identity, lease=FAST_LEASE, backoff=FAST_BACKOFF, rotation_check_seconds=0.1,
    )  # fmt: skip
    metrics = KubeMetrics()
    ready = asyncio.Event()
    elector_future: asyncio.Future[LeaderElector] = asyncio.get_running_loop().create_future()
    async with client_for(api, identity) as client:
        task = asyncio.create_task(run_cluster_duties(
            settings, client=client, metrics=metrics, certificates_ready=ready,
            elector_ready=elector_future,
        ))  # fmt: skip
        elector = await asyncio.wait_for(elector_future, 5)
        running = Replica(identity, settings, metrics, client, task, elector, ready)
        try:
            yield running
        finally:
            await running.stop()
