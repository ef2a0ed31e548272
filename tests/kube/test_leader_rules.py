"""Leader election: the rule as a truth table, then electors against the in-memory API on a
clock the test moves (never the machine's: a slow round must not look like an expired lease)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from cluster_emulator import ApiServer
from duty_testkit import eventually
from lightkube import AsyncClient

from sidemesh.kube.leader import LeaderElector, LeaseRecord, LeaseTimings, may_take
from sidemesh.kube.metrics import KubeMetrics

LEASE_PATH = "coordination.k8s.io/v1/leases"
TIMINGS = LeaseTimings(lease_duration=15, renew_deadline=10, retry_period=2)


def _record(holder: str, duration: float = 15) -> LeaseRecord:
    return LeaseRecord(holder=holder, duration_seconds=duration, renew_time="t",
                       transitions=0, resource_version="1")  # fmt: skip


@pytest.mark.parametrize(
    ("holder", "observed_at", "now", "allowed"),
    [
        ("", 0.0, 0.0, True),  # free (released)
        ("me", 0.0, 0.0, True),  # renewing my own lease
        ("other", 0.0, 14.9, False),  # held and fresh
        ("other", 0.0, 15.0, True),  # not seen renewed for a whole lease duration
        ("other", 10.0, 20.0, False),  # renewal observed recently
    ],
)
def test_may_take(holder: str, observed_at: float, now: float, allowed: bool) -> None:
    assert may_take(_record(holder), "me", observed_at=observed_at, now=now) is allowed


@pytest.mark.parametrize(("duration", "deadline", "retry"), [(1, 1, 0.1), (1, 0.5, 0.5), (1, 2, 3)])
def test_timings_must_nest(duration: float, deadline: float, retry: float) -> None:
    with pytest.raises(ValueError, match="retry_period < renew_deadline < lease_duration"):
        LeaseTimings(lease_duration=duration, renew_deadline=deadline, retry_period=retry)


def test_lease_record_reads_a_lease() -> None:
    record = LeaseRecord.from_lease({
        "metadata": {"resourceVersion": "7"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "leaseTransitions": 2},
    })  # fmt: skip
    assert (record.holder, record.duration_seconds, record.transitions) == ("a", 15.0, 2)
    assert LeaseRecord.from_lease({}).holder == ""


class ManualClock:
    """`clock()` is `now`; `sleep()` parks the caller until the test moves `now` past its end."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        woken = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, woken))
        try:
            await woken
        finally:
            self._sleepers = [(at, f) for at, f in self._sleepers if f is not woken]

    @property
    def sleeping(self) -> bool:
        return any(not f.done() for _, f in self._sleepers)

    async def advance(self, seconds: float) -> None:
        """Move on, wake whoever is due, and wait until everyone is parked again."""
        self.now += seconds
        for at, woken in self._sleepers:
            if at <= self.now and not woken.done():
                woken.set_result(None)
        await asyncio.sleep(0)
        await eventually(lambda: self.sleeping)


def elector(client: AsyncClient, identity: str, clock: ManualClock) -> LeaderElector:
    return LeaderElector(client, name="lease", namespace="istio-system", identity=identity,
                         metrics=KubeMetrics(), timings=TIMINGS, clock=clock,
                         sleep=clock.sleep)  # fmt: skip


def holder(api: ApiServer) -> Any:
    lease = api.stored(LEASE_PATH, "istio-system", "lease")
    return lease and (lease["spec"].get("holderIdentity"), lease["spec"].get("leaseTransitions"))


async def test_a_lease_is_taken_over_only_when_unrenewed_for_a_whole_duration(
    api: ApiServer, client: AsyncClient
) -> None:
    clock = ManualClock()
    a, b = elector(client, "a", clock), elector(client, "b", clock)
    assert await a.try_acquire_or_renew()
    assert holder(api) == ("a", 0)
    assert not await b.try_acquire_or_renew()  # b sees it held at 0
    clock.now = 10.0
    assert await a.try_acquire_or_renew()  # a renews
    clock.now = 14.5
    assert not await b.try_acquire_or_renew()  # b sees the renewal now: 14.5 is its new start
    clock.now = 29.25
    assert not await b.try_acquire_or_renew()
    clock.now = 29.5
    assert await b.try_acquire_or_renew()
    assert holder(api) == ("b", 1)
    assert not await a.try_acquire_or_renew()  # a's view starts now: b's is fresh


async def test_a_leader_that_cannot_renew_steps_down_at_the_renew_deadline(
    api: ApiServer, client: AsyncClient
) -> None:
    clock = ManualClock()
    leader = elector(client, "a", clock)
    duties_running = asyncio.Event()

    async def duties() -> None:
        duties_running.set()
        try:
            await asyncio.Event().wait()
        finally:
            duties_running.clear()

    task = asyncio.create_task(leader.run(duties))
    try:
        await eventually(lambda: clock.sleeping and duties_running.is_set())
        assert leader.is_leader and holder(api) == ("a", 0)
        await clock.advance(2)  # renewed at 2
        api.unavailable = True
        for _ in range(4):  # failed rounds at 4, 6, 8, 10: up to 8 s without renewal
            await clock.advance(2)
            assert leader.is_leader and duties_running.is_set()
        await clock.advance(2)  # 10 s: the renew deadline
        assert clock.now == 12.0
        assert not leader.is_leader and not duties_running.is_set()
        api.unavailable = False
        await clock.advance(2)  # the lease is still its own: taken again at once
        await eventually(duties_running.is_set)
        assert leader.is_leader and holder(api) == ("a", 0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
