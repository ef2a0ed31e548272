"""Is the sidecar ready to carry traffic? The same test Istio's agent applies.

Envoy must be LIVE (`server.state` 0, what the admin `/ready` reports), its workers started
(listeners bound), and it must have accepted at least one CDS and one LDS update from the
control plane; the agent must hold a workload certificate and not be draining. All Envoy facts
come from one admin request: `/stats?filter=…` for exactly those four statistics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final
from urllib.parse import quote

from sidemesh.agent import http

SERVER_STATE: Final = "server.state"
WORKERS_STARTED: Final = "listener_manager.workers_started"
CDS_SUCCESS: Final = "cluster_manager.cds.update_success"
LDS_SUCCESS: Final = "listener_manager.lds.update_success"
_LIVE: Final = 0
STATS_FILTER: Final = (
    r"^(server\.state|listener_manager\.workers_started"
    r"|cluster_manager\.cds\.update_success|listener_manager\.lds\.update_success)$"
)
STATS_PATH: Final = "/stats?filter=" + quote(STATS_FILTER, safe="")


def parse_stats(text: str) -> dict[str, int]:
    """Envoy's plain-text `/stats` output (`name: value` lines) → counters and gauges."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        value = value.strip()
        if sep and value.isdigit():
            values[name.strip()] = int(value)
    return values


def envoy_not_ready_reason(stats: Mapping[str, int]) -> str | None:
    """Why Envoy is not ready yet, or None when it is."""
    state = stats.get(SERVER_STATE)
    if state is None:
        return "Envoy has not reported its server state yet"
    if state != _LIVE:
        return f"Envoy is not live yet (server.state {state})"
    if stats.get(WORKERS_STARTED, 0) != 1:
        return "Envoy workers have not started"
    if stats.get(CDS_SUCCESS, 0) == 0:
        return "Envoy has not received clusters (CDS) from the control plane"
    if stats.get(LDS_SUCCESS, 0) == 0:
        return "Envoy has not received listeners (LDS) from the control plane"
    return None


async def check_envoy(admin_host: str, admin_port: int, *, timeout: float = 2.0) -> str | None:
    """Ask Envoy's admin; the reason it is not ready, or None."""
    try:
        response = await http.fetch(admin_host, admin_port, STATS_PATH, timeout=timeout)
    except http.HttpError as exc:
        return f"Envoy admin unreachable: {exc}"
    if response.status != 200:
        return f"Envoy admin answered HTTP {response.status}"
    return envoy_not_ready_reason(parse_stats(response.text))
