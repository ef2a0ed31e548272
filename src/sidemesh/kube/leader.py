"""Leader election on a `coordination.k8s.io/v1` Lease, so replicas never fight over a duty.

The algorithm is client-go's: a candidate takes the Lease when it is free or its holder has
not renewed it for `lease_duration`; the leader renews every `retry_period` and gives up its
duties if it could not renew within `renew_deadline` (shorter than the lease, so it has
stopped before anyone else may start). Expiry is judged by when this process last saw the
Lease change, on its own monotonic clock, never by comparing timestamps written by another
machine (clock skew would otherwise elect two leaders). Every write is conditional on the
`resourceVersion` it read, so two candidates cannot both win one round.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError

from sidemesh.kube import client as kube
from sidemesh.kube.metrics import KubeMetrics

log = logging.getLogger("sidemesh.kube.leader")

LEASE = kube.resource_type("coordination.k8s.io/v1", "Lease")


@dataclass(frozen=True)
class LeaseTimings:
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("need retry_period < renew_deadline < lease_duration")


DEFAULT_TIMINGS = LeaseTimings()


@dataclass(frozen=True)
class LeaseRecord:
    holder: str
    duration_seconds: float
    renew_time: str
    transitions: int
    resource_version: str

    @classmethod
    def from_lease(cls, lease: Mapping[str, Any]) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration_seconds=float(spec.get("leaseDurationSeconds") or 0),
            renew_time=str(spec.get("renewTime") or ""),
            transitions=int(spec.get("leaseTransitions") or 0),
            resource_version=str((lease.get("metadata") or {}).get("resourceVersion") or ""),
        )


def may_take(record: LeaseRecord, identity: str, *, observed_at: float, now: float) -> bool:
    """Whether `identity` may write itself into the Lease now: it holds it already, nobody
    does, or the holder has not renewed it for its lease duration (as observed locally)."""
    if record.holder in ("", identity):
        return True
    return now - observed_at >= record.duration_seconds


def _micro_time(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    _last_failure: str | None = None  # the last failed round's error, to log each change once

    def __init__(
        self,
        client: AsyncClient,
        *,
        name: str,
        namespace: str,
        identity: str,
        metrics: KubeMetrics,
        timings: LeaseTimings = DEFAULT_TIMINGS,
        labels: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,  # with `clock`, for tests
        wall_clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(
            tz=datetime.UTC
        ),
    ) -> None:
        self.client = client
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.metrics = metrics
        self.timings = timings
        self.labels = dict(labels or {})
        self.clock = clock
        self.sleep = sleep
        self.wall_clock = wall_clock
        self.leading = asyncio.Event()
        self._observed: tuple[str, str, str] | None = None
        self._observed_at = 0.0

    @property
    def is_leader(self) -> bool:
        return self.leading.is_set()

    def _spec(self, *, transitions: int, acquired: bool) -> dict[str, Any]:
        now = _micro_time(self.wall_clock())
        spec: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": math.ceil(self.timings.lease_duration),
            "renewTime": now,
            "leaseTransitions": transitions,
        }
        if acquired:
            spec["acquireTime"] = now
        return spec

    async def try_acquire_or_renew(self) -> bool:
        """One round: True if this process holds the Lease afterwards."""
        lease = await kube.get(self.client, LEASE, self.name, self.namespace)
        if lease is None:
            return await self._create()
        record = LeaseRecord.from_lease(lease)
        signature = (record.holder, record.renew_time, record.resource_version)
        if signature != self._observed:
            self._observed, self._observed_at = signature, self.clock()
        if not may_take(record, self.identity, observed_at=self._observed_at, now=self.clock()):
            return False
        taking_over = record.holder != self.identity
        transitions = record.transitions + (1 if taking_over else 0)
        patch = {
            "metadata": {"resourceVersion": record.resource_version},
            "spec": self._spec(transitions=transitions, acquired=taking_over),
        }
        try:
            await kube.merge_patch(self.client, LEASE, self.name, patch, self.namespace)
        except ApiError as exc:
            if kube.is_conflict(exc):
                return False  # someone else wrote it first
            raise
        return True

    async def _create(self) -> bool:
        from lightkube.codecs import from_dict

        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": self.labels},
            "spec": self._spec(transitions=0, acquired=True),
        }
        try:
            await self.client.create(from_dict(lease))
        except ApiError as exc:
            if kube.is_conflict(exc):
                return False
            raise
        return True

    async def _round(self) -> bool:
        try:
            taken = await self.try_acquire_or_renew()
            self._last_failure = None
            return taken
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the API server is down: this round is lost, not the process
            self.metrics.inc("sidemesh_kube_api_failures_total", operation="lease")
            # One warning per distinct failure, not one every retry period.
            failure = kube.describe_error(exc)
            level = logging.DEBUG if failure == self._last_failure else logging.WARNING
            self._last_failure = failure
            log.log(level, "lease %s: cannot take or renew it: %s", self.name, failure)
            return False

    async def run(self, duties: Callable[[], Awaitable[None]]) -> None:
        """Forever: become leader, run `duties` while leading, stop them on losing the Lease."""
        while True:
            while not await self._round():
                await self.sleep(self.timings.retry_period)
            self._set_leading(True)
            task = asyncio.create_task(self._supervise(duties), name=f"leader-duties-{self.name}")
            try:
                await self._keep_renewing()
            finally:
                self._set_leading(False)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _keep_renewing(self) -> None:
        """Returns when leadership is lost (not renewed within the renew deadline)."""
        renewed_at = self.clock()
        while True:
            await self.sleep(self.timings.retry_period)
            if await self._round():
                renewed_at = self.clock()
            elif self.clock() - renewed_at >= self.timings.renew_deadline:
                log.warning("lost lease %s: not renewed for %.1fs", self.name,
                            self.clock() - renewed_at)  # fmt: skip
                return

    async def _supervise(self, duties: Callable[[], Awaitable[None]]) -> None:
        """Run the duties; a crash is logged and they are restarted, leadership is kept."""
        while True:
            try:
                await duties()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("leader duties failed; restarting them")
                await self.sleep(self.timings.retry_period)

    def _set_leading(self, leading: bool) -> None:
        if leading == self.is_leader:
            return
        if leading:
            self.leading.set()
        else:
            self.leading.clear()
        self.metrics.set("sidemesh_leader", 1 if leading else 0)
        self.metrics.inc("sidemesh_leader_transitions_total")
        log.info("%s %s lease %s", self.identity, "acquired" if leading else "lost", self.name)

    async def release(self) -> None:
        """Give the Lease up (on shutdown) so a successor need not wait for it to expire."""
        self._set_leading(False)
        lease = await kube.get(self.client, LEASE, self.name, self.namespace)
        if lease is None or LeaseRecord.from_lease(lease).holder != self.identity:
            return
        patch = {
            "metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
            "spec": {"holderIdentity": None, "leaseDurationSeconds": 1},
        }
        with contextlib.suppress(ApiError):
            await kube.merge_patch(self.client, LEASE, self.name, patch, self.namespace)
            log.info("%s released lease %s", self.identity, self.name)
