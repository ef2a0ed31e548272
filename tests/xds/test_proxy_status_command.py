"""`sidemesh proxy-status` renders the control plane's /debug/syncz."""

from __future__ import annotations

import asyncio

from click.testing import CliRunner

from sidemesh.cli.proxy_status import proxy_status, render_details, render_table
from sidemesh.xds.monitoring import MonitoringServer

ROWS = [
    {
        "proxy": "sidecar~10.0.0.5~web-abc.demo~demo.svc.cluster.local",
        "pod": "web-abc.demo", "cluster_id": "Kubernetes", "revision": "canary",
        "istio_version": "1.28.0", "control_plane": "istiod-canary-7d9f",
        "types": {
            "cds": {"status": "SYNCED", "error": None},
            "eds": {"status": "STALE", "error": None},
            "lds": {"status": "NACK", "error": "duplicate filter chain match"},
        },
    }
]  # fmt: skip


def test_table_has_istio_columns_and_states() -> None:
    lines = render_table(ROWS).splitlines()
    assert lines[0].split() == ["NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "ISTIOD",
                                "REVISION", "VERSION"]  # fmt: skip
    assert lines[1].split() == ["web-abc.demo", "Kubernetes", "SYNCED", "NACK", "STALE", "NOT",
                                "SENT", "istiod-canary-7d9f", "canary", "1.28.0"]  # fmt: skip
    assert "LDS NACK: duplicate filter chain match" in render_details(ROWS)


async def test_command_reads_the_monitoring_endpoint() -> None:
    server = MonitoringServer(metrics=lambda: "x 1\n", syncz=lambda: ROWS)
    await server.start("127.0.0.1", 0)
    try:
        result = await asyncio.to_thread(
            CliRunner().invoke, proxy_status, ["--address", f"127.0.0.1:{server.port}", "--details"]
        )
    finally:
        await server.stop()
    assert result.exit_code == 0, result.output
    assert "web-abc.demo" in result.output and "NACK: duplicate" in result.output


def test_command_explains_an_unreachable_control_plane() -> None:
    result = CliRunner().invoke(proxy_status, ["--address", "127.0.0.1:1"])
    assert result.exit_code == 1
    assert "cannot read proxy status from 127.0.0.1:1" in result.output
