"""The leader-election rule, as a truth table (no API, no clock)."""

from __future__ import annotations

import pytest

from sidemesh.kube.leader import LeaseRecord, LeaseTimings, may_take


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
