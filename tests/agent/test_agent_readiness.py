"""Readiness from Envoy's stats: the truth table."""

from __future__ import annotations

import pytest

from sidemesh.agent.readiness import STATS_PATH, envoy_not_ready_reason, parse_stats

READY = (
    "cluster_manager.cds.update_success: 1\n"
    "listener_manager.lds.update_success: 2\n"
    "listener_manager.workers_started: 1\n"
    "server.state: 0\n"
)


def test_parse_stats() -> None:
    assert parse_stats(READY + "weird line\nx: y\n") == {
        "cluster_manager.cds.update_success": 1,
        "listener_manager.lds.update_success": 2,
        "listener_manager.workers_started": 1,
        "server.state": 0,
    }


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({}, None),
        ({"server.state": None}, "server state"),
        ({"server.state": 2}, "not live"),
        ({"listener_manager.workers_started": 0}, "workers"),
        ({"cluster_manager.cds.update_success": 0}, "CDS"),
        ({"listener_manager.lds.update_success": None}, "LDS"),
    ],
)
def test_each_condition_is_required(change: dict[str, int | None], reason: str | None) -> None:
    stats = parse_stats(READY)
    for name, value in change.items():
        if value is None:
            stats.pop(name)
        else:
            stats[name] = value
    result = envoy_not_ready_reason(stats)
    if reason is None:
        assert result is None
    else:
        assert result is not None and reason in result


def test_the_admin_query_is_url_encoded() -> None:
    assert STATS_PATH.startswith("/stats?filter=%5E%28server%5C.state")
    assert " " not in STATS_PATH and "|" not in STATS_PATH
