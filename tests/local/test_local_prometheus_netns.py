"""`sidemesh local prometheus` for real: Debian's Prometheus in the node's network namespace
finds a pod by its prometheus.io/* annotations (targets the daemon writes) and scrapes it;
`down` stops it with the rest of the node."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netns_kit import PYTHON, Local, needs_root, ready

from sidemesh.dashboard.server import DashboardServer, GraphSource
from sidemesh.local.prometheus import LocalPrometheus, local_prometheus_client

pytestmark = [
    needs_root,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs Debian's prometheus"),
]
NAMESPACE = "metrics"


def pod(name: str, served: Path, annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "annotations": annotations},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "app",
                "image": "python:3.11",
                "command": [PYTHON, "-m", "http.server", "8080", "--directory", str(served)],
            }],
        },
    }  # fmt: skip


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    served = tmp_path_factory.mktemp("www")
    (served / "m").mkdir()
    (served / "m" / "metrics.txt").write_text("# TYPE fixture_up gauge\nfixture_up 1\n")
    served.chmod(0o755)
    documents = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        pod("scraped", served, {"prometheus.io/scrape": "true", "prometheus.io/port": "8080",
                                "prometheus.io/path": "/m/metrics.txt"}),
        pod("quiet", served, {}),
    ]  # fmt: skip
    path = tmp_path_factory.mktemp("manifests") / "pods.yaml"
    path.write_text("\n---\n".join(json.dumps(d) for d in documents))
    runtime = Local(tmp_path_factory.mktemp("sm") / "state")
    runtime.run("apply", "-f", str(path))
    try:
        yield runtime
    finally:
        runtime.run("down", check=False)
        assert runtime.our_netns() == []


def test_prometheus_scrapes_annotated_pods_in_the_node_namespace(local: Local) -> None:
    local.wait("both pods ready", lambda: sum(map(ready, local.pods(NAMESPACE))) == 2)
    started = local.run("prometheus", "start", "--scrape-interval", "1s")
    assert f"in network namespace {local.prefix}-node" in started.stdout
    prometheus = LocalPrometheus.for_runtime(local.state_dir)
    pid = prometheus.pid()
    assert pid is not None
    client = prometheus.client()

    def scraped() -> bool:
        samples = client.query(f'fixture_up{{namespace="{NAMESPACE}"}}')
        return [(s.labels.get("pod"), s.value) for s in samples] == [("scraped", 1.0)]

    local.wait("Prometheus to scrape the annotated pod", scraped)
    # the other pod was never a target
    assert [s.labels["pod"] for s in client.query(f'up{{namespace="{NAMESPACE}"}}')] == ["scraped"]
    status = local.run("prometheus", "status").stdout
    assert f"prometheus: running (pid {pid})" in status
    assert f'not scraping {NAMESPACE}/quiet: no annotation prometheus.io/scrape: "true"' in status
    assert f"({NAMESPACE}/scraped)" in status
    # It runs in the node's network namespace (so its 127.0.0.1:9090 is the node's loopback).
    node = os.stat(f"/run/netns/{local.prefix}-node")
    here = os.stat(f"/proc/{pid}/ns/net")
    assert (here.st_dev, here.st_ino) == (node.st_dev, node.st_ino)

    # `sidemesh dashboard --local` reads this Prometheus through the node namespace.
    server = DashboardServer(GraphSource(local_prometheus_client(local.state_dir), "1m"))
    server.start()
    try:
        with urllib.request.urlopen(f"{server.url}api/graph", timeout=30) as response:
            graph = json.load(response)
    finally:
        server.stop()
    assert graph["error"] is None and graph["nodes"] == []  # no Istio metrics from these pods

    local.run("down")
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists() or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
