"""An in-place sidecar upgrade on a real API server, with this host as the node running the
pods (`sidemesh local node`) and two revisions' control planes run on the host: after
`upgrade-sidecars` the same pods carry the new proxy image and revision, istio-proxy was
restarted once and nothing else was (the app's container kept its start time and a restart
count of 0), and the restarted agent went to the new revision's control plane.

Traffic: a client calls a two-replica `web` through both sidecars during the upgrade. The
capture holds a connection while a proxy restarts, the old proxy drains first, and the web pod
whose proxy restarts is not ready meanwhile, so the other replica answers (the design is told in
tests/local/test_upgrade_traffic_netns.py). The grace period leaves the proxy its drain
(terminationDrainDuration 5 s, then up to 3 s for requests in flight). No request may fail but
for the kernel's reset of a connection caught in a closing listener's backlog, counted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from e2e_kit import Cluster, ControlPlane, free_port, wait_for
from test_e2e_node import MISSING, Node, _ready, node_cluster  # noqa: F401 (the fixture)
from test_upgrade_restarter_e2e import web_deployment

pytestmark = pytest.mark.skipif(
    bool(MISSING), reason="; ".join(MISSING) or "needs root for network namespaces"
)
OLD, NEW, TAG = "up-a", "up-b", "9.9.9-up"
GRACE_SECONDS = 12  # > terminationDrainDuration (5 s) + the wait for requests in flight (3 s)
RESETS_ALLOWED = 3
# The client asks web every 50 ms through both sidecars (STRICT mTLS) and logs each answer.
CLIENT_LOOP = (
    "import time, urllib.request\n"
    "while True:\n"
    "    try:\n"
    "        urllib.request.urlopen('http://web.mesh:8080/', timeout=30).read()\n"
    "        print('ok', flush=True)\n"
    "    except Exception as exc:\n"
    "        print('failed', type(exc).__name__, flush=True)\n"
    "    time.sleep(0.05)\n"
)
MESH = f"""
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: mesh}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 8080, targetPort: 8080}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: mesh}}
spec: {{mtls: {{mode: STRICT}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: client, namespace: mesh}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: client}}}}
  template:
    metadata: {{labels: {{app: client}}}}
    spec:
      terminationGracePeriodSeconds: {GRACE_SECONDS}
      containers:
      - name: client
        image: python:3.12-slim
        command: [python3, -c, {orjson.dumps(CLIENT_LOOP).decode()}]
"""


def _plane(cluster: Cluster, revision: str, workdir: Path, *extra: str) -> ControlPlane:
    plane = ControlPlane(cluster, revision, workdir, webhook_port=free_port())
    plane.workdir.mkdir()
    plane.install(*extra)
    # istiod runs on the host here, not as the install's pods.
    cluster.kubectl("scale", "deployment", f"istiod-{revision}", "-n", "istio-system",
                    "--replicas=0")  # fmt: skip
    plane.start()
    return plane


def _host_service(plane: ControlPlane) -> str:
    assert plane.process is not None
    arguments = [str(a) for a in plane.process.args]  # type: ignore[union-attr]
    port = arguments[arguments.index("--xds-tls-port") + 1]
    return f"istio-system/istiod-{plane.revision}:15012=127.0.0.1:{port}"


def _status(pod: dict[str, Any], name: str) -> dict[str, Any]:
    statuses = [*pod["status"].get("initContainerStatuses", []),
                *pod["status"].get("containerStatuses", [])]  # fmt: skip
    return next(s for s in statuses if s["name"] == name)


def _one(cluster: Cluster, app: str) -> dict[str, Any] | None:
    pods = cluster.pods("mesh", f"app={app}")
    return pods[0] if len(pods) == 1 else None


def _both(cluster: Cluster) -> list[dict[str, Any]] | None:
    pods = sorted(cluster.pods("mesh", "app=web"), key=lambda p: str(p["metadata"]["name"]))
    return pods if len(pods) == 2 else None


def _answers(node: Node, client: dict[str, Any]) -> list[str]:
    log = node.state / "node" / "pods" / client["metadata"]["uid"] / "logs" / "client" / "0.log"
    return log.read_text().split("\n")[:-1] if log.exists() else []


def test_upgrade_in_place_on_a_real_api_server(
    node_cluster: tuple[Cluster, Node],  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    cluster, node = node_cluster
    old = _plane(cluster, OLD, tmp_path / OLD)
    new = _plane(cluster, NEW, tmp_path / NEW, "--set", f"global.tag={TAG}")
    try:
        node.start("--host-service", _host_service(old), "--host-service", _host_service(new))
        cluster.kubectl("create", "namespace", "mesh")
        cluster.kubectl("label", "namespace", "mesh", f"istio.io/rev={OLD}")
        web = web_deployment("mesh", replicas=2, grace_seconds=GRACE_SECONDS)
        cluster.kubectl("apply", "-f", "-", input=web + "---" + MESH)
        pods = wait_for(
            "both web replicas and the client ready with their 1st sidecars",
            lambda: (w := _both(cluster)) and (c := _one(cluster, "client"))
            and all(_ready(p) for p in w) and _ready(c) and (w, c),
        )  # fmt: skip
        befores, client = pods
        assert all(p["metadata"]["annotations"]["istio.io/rev"] == OLD for p in befores)
        app_started = [_status(p, "web")["state"]["running"]["startedAt"] for p in befores]
        wait_for("the client's requests answered", lambda: "ok" in _answers(node, client))

        cluster.kubectl("label", "namespace", "mesh", f"istio.io/rev={NEW}", "--overwrite")
        start = len(_answers(node, client))
        done = cluster.sidemesh("upgrade-sidecars", "-n", "mesh", "-o", "json")
        results = orjson.loads(done.stdout)
        assert [(r["pod"].split("-")[0], r["action"], r["outcome"]) for r in results] == [
            ("client", "in-place", "patched"), *[("web", "in-place", "patched")] * 2,
        ], results  # fmt: skip

        def upgraded() -> list[dict[str, Any]] | None:
            pods = _both(cluster)
            if pods is None or not all(_ready(p) for p in pods):
                return None
            proxies = [_status(p, "istio-proxy") for p in pods]
            done = all(p["restartCount"] == 1 and p["image"].endswith(TAG) for p in proxies)
            return pods if done else None

        afters = wait_for("istio-proxy restarted with the new image, the pods ready", upgraded)
        assert [p["metadata"]["uid"] for p in afters] == [p["metadata"]["uid"] for p in befores]
        assert all(p["metadata"]["annotations"]["istio.io/rev"] == NEW for p in afters)
        webs = [_status(p, "web") for p in afters]
        assert [w["restartCount"] for w in webs] == [0, 0]
        assert [w["state"]["running"]["startedAt"] for w in webs] == app_started
        client_after = cluster.get_json("pod", client["metadata"]["name"], "-n", "mesh")
        assert _status(client_after, "client")["restartCount"] == 0
        assert _status(client_after, "istio-proxy")["restartCount"] == 1
        end = len(_answers(node, client))
        wait_for("answers again after the upgrade",
                 lambda: "ok" in _answers(node, client)[end:])  # fmt: skip
        window = _answers(node, client)[start:]
        failed = [line for line in window if line != "ok"]
        print(f"requests during the upgrade: {len(window) - len(failed)} answered, "
              f"{len(failed)} failed: {failed}")  # fmt: skip
        assert all(line == "failed ConnectionResetError" for line in failed), failed
        assert len(failed) <= RESETS_ALLOWED, failed
        logs = node.state / "node" / "pods" / afters[0]["metadata"]["uid"] / "logs" / "istio-proxy"
        restarted = (logs / "1.log").read_text()
        assert f"istiod-{NEW}.istio-system.svc:15012" in restarted, restarted[-2000:]
    finally:
        old.stop()
        new.stop()
