"""The dashboard end to end: a real Prometheus scrapes a fixture exporter of Istio-shaped
series, the dashboard server queries it, and a real headless Chromium draws the graph."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from chromium_kit import CHROMIUM, Chromium
from istio_exporter import EdgeTraffic, IstioExporter

from async_waits import eventually
from sidemesh.dashboard.server import DashboardServer, GraphSource
from sidemesh.local.prometheus import LocalPrometheus, PrometheusPaths

pytestmark = [
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs Debian's prometheus"),
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium"),
]

HOSTILE = '<img src=x onerror="document.body.dataset.pwned=1">'
HOSTILE_NAMESPACE = 'evil"ns</text><script>document.body.dataset.pwned=2</script>'
EDGES = [
    EdgeTraffic(("istio-system", "istio-ingressgateway"), ("default", "productpage"),
                {"200": 20}, latencies=(20.0,) * 20),
    # 9 in 10 succeed; p50 = 5 + 5 * 5/6 = 9.17 ms, p99 = 50 + 50 * 0.9 = 95 ms
    EdgeTraffic(("default", "productpage"), ("default", "reviews"), {"200": 9, "503": 1},
                latencies=(7.0,) * 6 + (20.0,) * 3 + (80.0,)),
    EdgeTraffic(("default", "productpage"), ("default", "details"), {"200": 10},
                mutual_tls=False, latencies=(3.0,) * 10),
    # the client's view of the same calls: the dashboard reads only the destination's
    EdgeTraffic(("default", "productpage"), ("default", "details"), {"503": 10},
                mutual_tls=False, latencies=(3.0,) * 10, reporter="source"),
    EdgeTraffic((HOSTILE_NAMESPACE, HOSTILE), ("default", "details"), {"200": 1},
                latencies=(3.0,)),
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[LocalPrometheus, IstioExporter]]:
    with IstioExporter(EDGES) as exporter:
        local = LocalPrometheus(PrometheusPaths(tmp_path / "prometheus"), None, port=free_port())
        local.paths.targets_dir.mkdir(parents=True)
        (local.paths.targets_dir / "exporter.json").write_text(
            f'[{{"targets": ["127.0.0.1:{exporter.port}"], "labels": {{"job": "fixture"}}}}]'
        )
        local.start(scrape_interval="1s")
        try:
            yield local, exporter
        finally:
            local.stop()


async def test_dashboard_draws_the_live_graph(
    prometheus: tuple[LocalPrometheus, IstioExporter], tmp_path: Path
) -> None:
    local, _ = prometheus
    client = local.client()
    # Observable: Prometheus has scraped twice (a rate needs two samples in its window).
    await eventually(lambda: client.query("sum(rate(istio_requests_total[10s])) > 0"), timeout=60)
    server = DashboardServer(GraphSource(client, "10s"))
    server.start()
    try:
        async with Chromium(tmp_path / "profile") as browser:
            await browser.navigate(server.url)
            await eventually(
                lambda: browser.evaluate(
                    "document.querySelectorAll('#edges .edge').length === 4 && "
                    "Number(document.body.dataset.updates) >= 1"
                ),
                timeout=60,
            )
            nodes = await browser.evaluate(
                "[...document.querySelectorAll('#nodes .node')].map(n => n.dataset.id)"
            )
            assert sorted(nodes) == sorted([
                "istio-system/istio-ingressgateway", "default/productpage", "default/reviews",
                "default/details", f"{HOSTILE_NAMESPACE}/{HOSTILE}",
            ])  # fmt: skip
            reviews = await browser.evaluate(
                """(() => {
                  const e = document.querySelector(
                    '.edge[data-source="default/productpage"][data-destination="default/reviews"]');
                  return {cls: e.getAttribute('class'),
                          rate: e.querySelector('.edge-rate').textContent,
                          success: e.querySelector('.edge-success').textContent,
                          latency: e.querySelector('.edge-latency').textContent,
                          lock: e.querySelectorAll('.lock').length};
                })()"""
            )
            assert reviews["success"] == "success 90.0%"
            assert reviews["latency"] == "p50 9.17 ms · p99 95.00 ms"
            assert reviews["rate"].endswith(" req/s") and not reviews["rate"].startswith("0.00")
            assert reviews["lock"] == 1 and reviews["cls"] == "edge bad"
            details = await browser.evaluate(
                """(() => {
                  const e = document.querySelector(
                    '.edge[data-source="default/productpage"][data-destination="default/details"]');
                  return {success: e.querySelector('.edge-success').textContent,
                          lock: e.querySelectorAll('.lock').length};
                })()"""
            )
            assert details == {"success": "success 100.0%", "lock": 0}
            # Golden signals: details served 11 requests per scrape, none failed.
            row = await browser.evaluate(
                "[...document.querySelector('#workloads tr[data-id=\"default/details\"]')"
                ".children].map(c => c.textContent)"
            )
            assert row[:2] == ["details", "default"] and row[3] == "100.0%"
            assert row[4] == "3.00 ms"  # histogram_quantile's interpolation in (1, 5]
            # Hostile label values are shown as text, nothing of them runs.
            hostile = await browser.evaluate(
                "[...document.querySelectorAll('.node-name')].map(t => t.textContent)"
            )
            assert HOSTILE in hostile
            assert (
                await browser.evaluate(
                    "document.querySelectorAll('img, #graph script, #workloads script').length"
                )
                == 0
            )
            assert await browser.evaluate("document.body.dataset.pwned === undefined")
            shot = await browser.screenshot(tmp_path / "dashboard.png")
            assert shot.stat().st_size > 10_000
    finally:
        server.stop()
