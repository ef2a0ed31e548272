"""Admission latency as a real kube-apiserver sees it: prints one JSON line.

Starts a testbed (etcd, kube-apiserver v1.24, kube-controller-manager on loopback; see
`sidemesh.kube.testbed`), installs revision `bench` and runs `sidemesh discovery --kube` the way
the e2e tier does (tests/e2e/e2e_kit.py's ControlPlane), then creates a 50-replica Deployment,
in alternating rounds, in three fresh namespaces:

* `plain`: no webhook applies (the yardstick: `burst_s_without_webhook`);
* `injected`: labelled `istio.io/rev=bench`, so every pod goes through our webhook (`burst_s`);
* `floor`: selected by a second MutatingWebhookConfiguration whose server is the same stack
  (uvicorn, httptools, uvloop, our TLS context) answering "allowed" with no patch: what the API
  server costs per call around any webhook (`floor_*`).

burst = from the create request until the watch has seen all 50 pods (the ReplicaSet controller
creates them in slow-start batches, throttled by its client's QPS limit of 20 s⁻¹).
Latencies come from the API server's own histogram
`apiserver_admission_webhook_admission_duration_seconds` (the difference across one burst):
p50/p99 by linear interpolation inside its buckets (they are coarse: 5, 25, 100 ms, …), and the
mean as sum/count, which needs no buckets. `*_connections` counts the TCP connections the API
server opened to the webhook during a burst (new handshakes), read from /proc/net/tcp.
Figures are the median over the rounds.

    .venv/bin/python benchmarks/kube_admission.py [--rounds N] [--replicas N]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))

from e2e_kit import Cluster, ControlPlane, free_port, wait_for
from webhook_server import LOCALHOST, ServerProcess, write_self_signed

from proc_support import cpu_seconds
from sidemesh.kube.testbed import ASSETS_ENV, Testbed, find_assets, start_testbed

ROOT = Path(__file__).resolve().parent.parent
REVISION = "bench"
METRIC = "apiserver_admission_webhook_admission_duration_seconds"
FLOOR_LABEL = "sidemesh-bench-floor"
SETTLE_S = 4.0  # before each burst: the controllers' client rate limiters refill (QPS 20, burst 30)
MODES = ("plain", "injected", "floor", "floor-patch")


# --- the API server, over one keep-alive connection -----------------------------------------------


class Api:
    """Minimal JSON client for the testbed (admin token); one connection per instance."""

    def __init__(self, testbed: Testbed, *, timeout: float = 30.0) -> None:
        self._context = ssl.create_default_context(cafile=str(testbed.ca_file))
        self._host, port = testbed.server.removeprefix("https://").split(":")
        self._port = int(port)
        self._timeout = timeout
        self._headers = {"Authorization": f"Bearer {testbed.admin_token}"}
        self._connection = self._connect()

    def _connect(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            self._host, self._port, context=self._context, timeout=self._timeout
        )

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        headers = dict(self._headers)
        data = None
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        self._connection.request(method, path, body=data, headers=headers)
        response = self._connection.getresponse()
        return response.status, response.read()

    def json(self, method: str, path: str, body: Any = None) -> Any:
        status, data = self.request(method, path, body)
        if status >= 300:
            raise RuntimeError(f"{method} {path}: {status} {data[:300]!r}")
        return orjson.loads(data) if data.startswith(b"{") else data

    @contextmanager
    def watch(self, path: str) -> Iterator[http.client.HTTPResponse]:
        connection = self._connect()
        try:
            connection.request("GET", path, headers=self._headers)
            response = connection.getresponse()
            if response.status != 200:
                raise RuntimeError(f"watch {path}: {response.status} {response.read()[:300]!r}")
            yield response
        finally:
            connection.close()


# --- the API server's histogram -------------------------------------------------------------------


@dataclass
class Histogram:
    buckets: dict[float, float]  # upper bound -> cumulative count
    total: float
    count: float

    def minus(self, earlier: Histogram) -> Histogram:
        return Histogram(
            {le: n - earlier.buckets.get(le, 0.0) for le, n in self.buckets.items()},
            self.total - earlier.total,
            self.count - earlier.count,
        )

    def quantile(self, q: float) -> float:
        """Prometheus' histogram_quantile: linear inside the bucket holding the rank."""
        if self.count <= 0:
            return float("nan")
        rank = q * self.count
        lower, below = 0.0, 0.0
        for bound in sorted(self.buckets):
            cumulative = self.buckets[bound]
            if cumulative >= rank:
                if bound == float("inf"):
                    return lower
                width = cumulative - below
                return lower + (bound - lower) * ((rank - below) / width if width else 1.0)
            lower, below = bound, cumulative
        return lower

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")


def parse_histogram(text: str, metric: str, selector: str = "") -> Histogram:
    """`metric`'s buckets, sum and count, summed over the series whose labels hold `selector`."""
    buckets: dict[float, float] = {}
    total = count = 0.0
    for line in text.splitlines():
        if not line.startswith(metric) or selector not in line:
            continue
        series, _, value = line.rpartition(" ")
        if series.startswith(metric + "_bucket"):
            bound = series.split('le="', 1)[1].split('"', 1)[0]
            le = float("inf") if bound == "+Inf" else float(bound)
            buckets[le] = buckets.get(le, 0.0) + float(value)
        elif series.startswith(metric + "_sum"):
            total += float(value)
        elif series.startswith(metric + "_count"):
            count += float(value)
    return Histogram(buckets, total, count)


def admission_histogram(api: Api) -> Histogram:
    """The API server's webhook admission histogram, over every mutating webhook ("admit")."""
    return parse_histogram(api.json("GET", "/metrics").decode(), METRIC, 'type="admit"')


def handler_histogram(webhook_port: int) -> Histogram:
    """Our webhook's own `sidecar_injection_time_seconds` (request in to answer out)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    connection = http.client.HTTPSConnection(LOCALHOST, webhook_port, context=context, timeout=10)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    return parse_histogram(text, "sidecar_injection_time_seconds")


def established_connections(port: int) -> int:
    """Established TCP connections whose local port is `port` (the webhook's side)."""
    found = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                found += 1
    return found


# --- the always-allow floor webhook ---------------------------------------------------------------


def _serve_floor(port: int, cert_file: Path, key_file: Path) -> None:
    """Same stack as the webhook; reads the uid and allows: `/allow` patches nothing, `/patch`
    returns the patch in `patch.json` next to the certificate (one our webhook produced)."""
    from sidemesh.webhook.server import serve_https

    headers = [(b"content-type", b"application/json")]
    patch_file = cert_file.parent / "patch.json"
    patch: dict[str, Any] = {}  # read at the first /patch request (written after we start)

    async def floor(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks, more_body = [], True
        while more_body:
            message = await receive()
            chunks.append(message.get("body", b""))
            more_body = message.get("more_body", False)
        if scope["path"] == "/ready":
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"{}"})
            return
        review = orjson.loads(b"".join(chunks))
        response: dict[str, Any] = {"uid": review["request"]["uid"], "allowed": True}
        if scope["path"] == "/patch":
            if not patch:
                patch.update(orjson.loads(patch_file.read_bytes()))
            response.update(patch)
        answer = orjson.dumps({
            "apiVersion": review.get("apiVersion", "admission.k8s.io/v1"),
            "kind": "AdmissionReview",
            "response": response,
        })  # fmt: skip
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    serve_https(floor, host=LOCALHOST, port=port, cert_file=cert_file, key_file=key_file)


def start_floor(api: Api, directory: Path) -> ServerProcess:
    from webhook_server import _start

    cert_file, key_file = write_self_signed(directory)
    port = free_port()
    command = [sys.executable, __file__, "serve-floor", str(port), str(cert_file), str(key_file)]
    server = _start(command, port, cert_file)
    api.json("POST", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations", {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "sidemesh-bench-floor"},
        "webhooks": [{
            "name": f"{route}.floor.bench.sidemesh.io",
            "clientConfig": {
                "url": f"https://{LOCALHOST}:{port}/{route}",
                "caBundle": base64.b64encode(cert_file.read_bytes()).decode(),
            },
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["pods"]}],
            "namespaceSelector": {"matchLabels": {FLOOR_LABEL: route}},
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "failurePolicy": "Fail",
        } for route in ("allow", "patch")],
    })  # fmt: skip
    return server


def capture_patch(api: Api, webhook_port: int, namespace: str, destination: Path) -> None:
    """Ask our webhook to inject a pod the API server stored (as it would at admission) and
    keep its answer's patch for the floor's `/patch` route."""
    pod = api.json("GET", f"/api/v1/namespaces/{namespace}/pods")["items"][0]
    review = {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "capture", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace, "operation": "CREATE", "object": pod,
            "userInfo": {"username": "bench"},
        },
    }  # fmt: skip
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    connection = http.client.HTTPSConnection(LOCALHOST, webhook_port, context=context, timeout=10)
    try:
        connection.request(
            "POST", "/inject", body=orjson.dumps(review),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        response = orjson.loads(connection.getresponse().read())["response"]
    finally:
        connection.close()
    if "patch" not in response:
        raise RuntimeError(f"our webhook did not patch the captured pod: {response}")
    destination.write_bytes(
        orjson.dumps({"patch": response["patch"], "patchType": response["patchType"]})
    )


# --- one burst ------------------------------------------------------------------------------------


def deployment(replicas: int) -> dict[str, Any]:
    labels = {"app": "burst"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "burst"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{
                    "name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}],
                }]},
            },
        },
    }  # fmt: skip


def namespace_labels(mode: str) -> dict[str, str]:
    labels = {
        "injected": {"istio.io/rev": REVISION},
        "floor": {FLOOR_LABEL: "allow"},
        "floor-patch": {FLOOR_LABEL: "patch"},
    }
    return labels.get(mode, {})


def burst(
    api: Api, name: str, mode: str, replicas: int, webhook_port: int, pids: dict[str, int]
) -> dict[str, float]:
    """Create the Deployment in a fresh namespace labelled for `mode`; time until `replicas`
    pods exist."""
    return timed_burst(
        api, name, namespace_labels(mode), replicas, webhook_port, pids,
        sidecar=mode in ("injected", "floor-patch"), ours=mode == "injected",
    )  # fmt: skip


def timed_burst(
    api: Api,
    name: str,
    labels: dict[str, str],
    replicas: int,
    webhook_port: int,
    pids: dict[str, int],
    *,
    sidecar: bool,
    ours: bool,
) -> dict[str, float]:
    """`burst`, spelled out; `pids` names processes whose CPU time is counted (`*_cpu_ms`)."""
    api.json("POST", "/api/v1/namespaces", {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels},
    })  # fmt: skip
    # Pods are refused until the namespace's default ServiceAccount exists.
    wait_for(
        f"the default ServiceAccount of {name}",
        lambda: api.request("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default")[0] == 200,
    )
    listed = api.json("GET", f"/api/v1/namespaces/{name}/pods")
    version = listed["metadata"]["resourceVersion"]
    time.sleep(SETTLE_S)
    connections_before = established_connections(webhook_port)
    before = admission_histogram(api)
    handled_before = handler_histogram(webhook_port) if ours else None
    cpu_before = {what: cpu_seconds(pid) for what, pid in pids.items()}
    seen: set[str] = set()
    injected = 0
    watch_path = f"/api/v1/namespaces/{name}/pods?watch=1&resourceVersion={version}"
    with api.watch(watch_path) as stream:
        started = time.perf_counter()
        api.json("POST", f"/apis/apps/v1/namespaces/{name}/deployments", deployment(replicas))
        while len(seen) < replicas:
            line = stream.readline()
            if not line:
                raise RuntimeError(f"the watch on {name} ended after {len(seen)} pods")
            event = orjson.loads(line)
            if event["type"] == "ADDED":
                pod = event["object"]
                seen.add(pod["metadata"]["name"])
                names = [c["name"] for c in pod["spec"].get("containers", [])]
                names += [c["name"] for c in pod["spec"].get("initContainers", [])]
                injected += "istio-proxy" in names
        elapsed = time.perf_counter() - started
    cpu = {f"{what}_cpu_ms": (cpu_seconds(pid) - cpu_before[what]) * 1000
           for what, pid in pids.items()}  # fmt: skip
    connections_after = established_connections(webhook_port)
    delta = admission_histogram(api).minus(before)
    handler_mean = float("nan")
    if handled_before is not None:
        handler_mean = handler_histogram(webhook_port).minus(handled_before).mean
    if injected != (replicas if sidecar else 0):
        raise RuntimeError(f"{injected} of {replicas} pods in {name} have a sidecar")
    return {
        "burst_s": elapsed,
        "admissions": delta.count,
        "p50_ms": delta.quantile(0.5) * 1000,
        "p99_ms": delta.quantile(0.99) * 1000,
        "mean_ms": delta.mean * 1000,
        "connections": float(max(connections_after - connections_before, 0)),
        "connections_open": float(connections_after),
        "handler_mean_ms": handler_mean * 1000,
        **cpu,
    }


# --- main -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=50)
    options = parser.parse_args()
    try:
        assets = find_assets()
    except Exception:
        assets = find_assets({ASSETS_ENV: str(ROOT / ".venv" / "k8s-assets")})
    with tempfile.TemporaryDirectory(prefix="sidemesh-kube-admission-") as scratch:
        work = Path(scratch)
        testbed = start_testbed(work / "testbed", assets)
        plane: ControlPlane | None = None
        floor: ServerProcess | None = None
        try:
            cluster = Cluster(testbed)
            (work / "cp").mkdir()
            plane = ControlPlane(cluster, REVISION, work / "cp", webhook_port=free_port())
            plane.install()
            plane.start()
            api = Api(testbed)
            (work / "floor").mkdir()
            floor = start_floor(api, work / "floor")
            ports = {"plain": plane.webhook_port, "injected": plane.webhook_port,
                     "floor": floor.port, "floor-patch": floor.port}  # fmt: skip
            assert plane.process is not None
            apiserver = testbed._processes["kube-apiserver"].pid
            webhook_pid = {
                "plain": plane.process.pid,
                "injected": plane.process.pid,
                "floor": floor.process.pid,
                "floor-patch": floor.process.pid,
            }
            pids = {m: {"apiserver": apiserver, "webhook": webhook_pid[m]} for m in MODES}
            # One unmeasured burst each warms the API server's webhook clients and our memo.
            for mode in MODES:
                if mode == "floor-patch":
                    capture_patch(api, plane.webhook_port, "warm-plain", work / "floor/patch.json")
                burst(api, f"warm-{mode}", mode, 2, ports[mode], pids[mode])
            results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
            for round_ in range(options.rounds):
                for mode in MODES:
                    name = f"bench-{mode}-{round_}"
                    results[mode].append(
                        burst(api, name, mode, options.replicas, ports[mode], pids[mode])
                    )
        finally:
            if floor is not None:
                floor.stop()
            if plane is not None:
                plane.stop()
            testbed.stop()

    def median(mode: str, key: str) -> float:
        return round(statistics.median(r[key] for r in results[mode]), 3)

    figures = {
        "replicas": options.replicas,
        "rounds": options.rounds,
        "admission_p50_ms": median("injected", "p50_ms"),
        "admission_p99_ms": median("injected", "p99_ms"),
        "admission_mean_ms": median("injected", "mean_ms"),
        "burst_s": median("injected", "burst_s"),
        "burst_s_without_webhook": median("plain", "burst_s"),
        "burst_ratio": round(median("injected", "burst_s") / median("plain", "burst_s"), 3),
        "webhook_connections_per_burst": median("injected", "connections"),
        "floor_p50_ms": median("floor", "p50_ms"),
        "floor_mean_ms": median("floor", "mean_ms"),
        "floor_burst_s": median("floor", "burst_s"),
        "floor_connections_per_burst": median("floor", "connections"),
        "floor_patch_p50_ms": median("floor-patch", "p50_ms"),
        "floor_patch_mean_ms": median("floor-patch", "mean_ms"),
        "floor_patch_burst_s": median("floor-patch", "burst_s"),
        "handler_mean_ms": median("injected", "handler_mean_ms"),
        # CPU per admission: the webhook process, and the API server beyond an uninjected burst
        "webhook_cpu_ms_per_admission": round(
            median("injected", "webhook_cpu_ms") / options.replicas, 3
        ),
        "floor_cpu_ms_per_admission": round(
            median("floor", "webhook_cpu_ms") / options.replicas, 3
        ),
        "apiserver_extra_cpu_ms_per_admission": {
            m: round(
                (median(m, "apiserver_cpu_ms") - median("plain", "apiserver_cpu_ms"))
                / options.replicas,
                3,
            )
            for m in MODES[1:]
        },
        "burst_s_all": {m: [round(r["burst_s"], 3) for r in results[m]] for m in MODES},
        "mean_ms_all": {m: [round(r["mean_ms"], 2) for r in results[m]] for m in MODES[1:]},
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "serve-floor":
        _serve_floor(int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
    else:
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        main()
