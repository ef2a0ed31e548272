"""What `sidemesh demo traffic` applies and measures, as data: the app (one Service `web`, four
versions behind it), the VirtualService and DestinationRule of each step, the tally program
run inside the client pod, and the checks over what it counted. Pure; `traffic.py` runs it.

Versions of `web` (one pod each, the same little server, told apart by env):
* v1, v2: answer 200 `{"version": ...}`;
* v3: faulty: exactly every other request is answered 503 (so retries have something certain
  to recover from);
* broken: answers 500 always; it shares the label `pool: a` with v1, so the subset `pool`
  has one good and one bad endpoint (for outlier ejection).
Paths: `/slow` answers after 3 s, `/hold` after 1 s; `/healthz` (probes) is never faulty.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import yaml

from sidemesh.api import names
from sidemesh.install.naming import mesh_configmap_name

NAMESPACE: Final = "traffic"
HOST: Final = "web"
FQDN: Final = f"{HOST}.{NAMESPACE}.svc.cluster.local"
SLOW_SECONDS: Final = 3.0
TIMEOUT: Final = "500ms"
SUBSETS: Final = {"v1": {"version": "v1"}, "v2": {"version": "v2"}, "v3": {"version": "v3"},
                  "pool": {"pool": "a"}}  # fmt: skip

# The web server every version runs (python3 -c, as the demo app does).
WEB_APP: Final = """\
import http.server, json, os, threading, time
version, mode = os.environ["VERSION"], os.environ.get("MODE", "ok")
lock, calls = threading.Lock(), [0]
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        status = 200
        if self.path.startswith("/slow"):
            time.sleep(float(os.environ.get("SLOW_SECONDS", "3")))
        elif self.path.startswith("/hold"):
            time.sleep(1)
        if self.path != "/healthz" and mode == "flaky":
            with lock:
                calls[0] += 1
                status = 503 if calls[0] % 2 else 200
        elif self.path != "/healthz" and mode == "broken":
            status = 500
        body = json.dumps({"version": version}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("", 8080), Handler).serve_forever()
"""

# Run in the client's app container (so through its sidecar): N GETs over C threads, then ONE
# JSON line: status counts, version counts of the 200s, how many 503s Envoy marked as
# overload (its circuit breaker: `x-envoy-overloaded`), and the slowest request in ms.
TALLY: Final = """\
import collections, concurrent.futures, json, sys, time, urllib.error, urllib.request
url, count, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def one(_):
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=15) as reply:
            status, body, headers = reply.status, reply.read(), reply.headers
    except urllib.error.HTTPError as error:
        status, body, headers = error.code, error.read(), error.headers
    except Exception as error:
        return 0, None, False, (time.monotonic() - started) * 1000, repr(error)
    try:
        version = json.loads(body).get("version")
    except ValueError:
        version = None
    overloaded = headers.get("x-envoy-overloaded") is not None
    return status, version, overloaded, (time.monotonic() - started) * 1000, None
with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    results = list(pool.map(one, range(count)))
print(json.dumps({
    "status": collections.Counter(str(r[0]) for r in results),
    "versions": collections.Counter(r[1] for r in results if r[0] == 200 and r[1]),
    "overloaded": sum(1 for r in results if r[0] == 503 and r[2]),
    "max_ms": round(max(r[3] for r in results)),
    "errors": [r[4] for r in results if r[4]][:3],
}))
"""


@dataclass(frozen=True)
class Tally:
    """What one tally counted."""

    status: Mapping[str, int]
    versions: Mapping[str, int]
    overloaded: int = 0
    max_ms: int = 0
    errors: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return sum(self.status.values())

    @property
    def ok(self) -> int:
        return self.status.get("200", 0)

    def share(self, version: str) -> float:
        """Percent of all requests answered 200 by `version`."""
        return 100.0 * self.versions.get(version, 0) / self.total if self.total else 0.0


def parse_tally(output: str) -> Tally | None:
    """The tally's JSON line (the last line of its output), or None if there is none."""
    for line in reversed(output.strip().splitlines()):
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if isinstance(document, dict) and "status" in document:
            return Tally(
                status={str(k): int(v) for k, v in document["status"].items()},
                versions={str(k): int(v) for k, v in document.get("versions", {}).items()},
                overloaded=int(document.get("overloaded", 0)),
                max_ms=int(document.get("max_ms", 0)),
                errors=tuple(str(e) for e in document.get("errors", [])),
            )
    return None


# --- the app --------------------------------------------------------------------------------


def _deployment(version: str, labels: Mapping[str, str], mode: str) -> dict[str, Any]:
    name = f"web-{version}"
    pod_labels = {"app": HOST, "version": version, **labels}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": HOST, "version": version}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                    "name": "web", "image": "python:3.12-slim",
                    "command": ["python3", "-u", "-c", WEB_APP],
                    "env": [{"name": "VERSION", "value": version},
                            {"name": "MODE", "value": mode},
                            {"name": "SLOW_SECONDS", "value": str(SLOW_SECONDS)}],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                                       "periodSeconds": 2},
                }]},
            },
        },
    }  # fmt: skip


def app_objects(revision: str) -> list[dict[str, Any]]:
    """The namespace (labelled for injection by `revision`), `web` and its four versions, and a
    client pod to send requests from."""
    return [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": NAMESPACE, "labels": {"istio.io/rev": revision}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": HOST, "namespace": NAMESPACE},
         "spec": {"selector": {"app": HOST},
                  "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
        _deployment("v1", {"pool": "a"}, "ok"),
        _deployment("v2", {}, "ok"),
        _deployment("v3", {}, "flaky"),
        _deployment("broken", {"pool": "a"}, "broken"),
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "client", "namespace": NAMESPACE},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "client"}},
                  "template": {"metadata": {"labels": {"app": "client"}},
                               "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                                   "name": "client", "image": "python:3.12-slim",
                                   "command": ["python3", "-c", "import time; time.sleep(10**9)"],
                               }]}}}},
    ]  # fmt: skip


GATEWAY_NAMESPACE: Final = "istio-ingress"
GATEWAY_HOST: Final = "web.example.com"


def gateway_objects(revision: str, node_port: int) -> list[dict[str, Any]]:
    """An ingress gateway deployed Istio's way (istio-proxy alone, `image: auto`, injection
    template `gateway`) behind a NodePort Service: the host's 127.0.0.1:`node_port`."""
    selector = {"istio": "ingressgateway"}
    return [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": GATEWAY_NAMESPACE, "labels": {"istio.io/rev": revision}}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "istio-ingressgateway", "namespace": GATEWAY_NAMESPACE}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "istio-ingressgateway", "namespace": GATEWAY_NAMESPACE},
         "spec": {"replicas": 1, "selector": {"matchLabels": selector},
                  "template": {
                      "metadata": {"labels": {**selector, "app": "istio-ingressgateway"},
                                   "annotations": {"inject.istio.io/templates": "gateway"}},
                      "spec": {"serviceAccountName": "istio-ingressgateway",
                               "terminationGracePeriodSeconds": 1,
                               "containers": [{"name": "istio-proxy", "image": "auto",
                                               "ports": [{"name": "http2",
                                                          "containerPort": 8080}]}]}}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "istio-ingressgateway", "namespace": GATEWAY_NAMESPACE},
         "spec": {"type": "NodePort", "selector": selector,
                  "ports": [{"name": "http2", "port": 80, "targetPort": 8080,
                             "nodePort": node_port}]}},
    ]  # fmt: skip


def ingress() -> list[dict[str, Any]]:
    """A Gateway for `web.example.com` and a VirtualService bound to it, routing to v1."""
    return [
        {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
         "metadata": {"name": "ingress", "namespace": GATEWAY_NAMESPACE},
         "spec": {"selector": {"istio": "ingressgateway"},
                  "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"},
                               "hosts": [f"{NAMESPACE}/{GATEWAY_HOST}"]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "web-ingress", "namespace": NAMESPACE},
         "spec": {"hosts": [GATEWAY_HOST], "gateways": [f"{GATEWAY_NAMESPACE}/ingress"],
                  "http": [{"route": [{"destination": {"host": FQDN, "subset": "v1",
                                                       "port": {"number": 80}}}]}]}},
    ]  # fmt: skip


# --- the configuration of each step ---------------------------------------------------------


def to(subset: str, weight: int | None = None) -> dict[str, Any]:
    destination = {"destination": {"host": HOST, "subset": subset}}
    return destination if weight is None else {**destination, "weight": weight}


def virtual_service(*rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": HOST, "namespace": NAMESPACE},
        "spec": {"hosts": [HOST], "http": list(rules)},
    }  # fmt: skip


def destination_rule(traffic_policy: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "host": HOST,
        "subsets": [{"name": name, "labels": labels} for name, labels in SUBSETS.items()],
    }
    if traffic_policy:
        spec["trafficPolicy"] = traffic_policy
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": HOST, "namespace": NAMESPACE}, "spec": spec,
    }  # fmt: skip


def weighted(v1: int, v2: int) -> list[dict[str, Any]]:
    """The canary at `v1`/`v2` percent (a 0 weight leaves that version out)."""
    routes = [to(s, w) for s, w in (("v1", v1), ("v2", v2)) if w]
    return [virtual_service({"name": f"v1-{v1}-v2-{v2}", "route": routes}), destination_rule()]


def retries() -> list[dict[str, Any]]:
    """All traffic to the faulty v3: `/raw` without retries, the rest with them."""
    return [
        virtual_service(
            {"name": "raw", "match": [{"uri": {"prefix": "/raw"}}], "route": [to("v3")],
             "retries": {"attempts": 0}},
            {"name": "retried", "route": [to("v3")],
             "retries": {"attempts": 3, "retryOn": "5xx"}},
        ),
        destination_rule(),
    ]  # fmt: skip


def timeout() -> list[dict[str, Any]]:
    return [
        virtual_service(
            {"name": "slow", "match": [{"uri": {"prefix": "/slow"}}], "route": [to("v1")],
             "timeout": TIMEOUT, "retries": {"attempts": 0}},
            {"name": "rest", "route": [to("v1")]},
        ),
        destination_rule(),
    ]  # fmt: skip


def circuit_breaker() -> list[dict[str, Any]]:
    """One connection and one pending request to v1: the rest overflow (503, UO)."""
    pool = {"tcp": {"maxConnections": 1},
            "http": {"http1MaxPendingRequests": 1, "maxRequestsPerConnection": 1}}  # fmt: skip
    return [
        virtual_service({"name": "held", "route": [to("v1")], "retries": {"attempts": 0}}),
        destination_rule({"connectionPool": pool}),
    ]


def outlier_detection() -> list[dict[str, Any]]:
    """Subset `pool` (v1 and broken): one 5xx ejects a host for a minute."""
    detection = {"consecutive5xxErrors": 1, "interval": "1s", "baseEjectionTime": "60s",
                 "maxEjectionPercent": 100}  # fmt: skip
    return [
        virtual_service({"name": "pool", "route": [to("pool")], "retries": {"attempts": 0}}),
        destination_rule({"outlierDetection": detection}),
    ]


def url(path: str = "/") -> str:
    return f"http://{HOST}{path}"


# --- outbound REGISTRY_ONLY -----------------------------------------------------------------
#
# The "external" service is a plain HTTP server on the node (outside every pod and the mesh),
# at the node's bridge address, the pods' gateway. The client asks the same server under two
# names: EXTERNAL_HOST, which a ServiceEntry declares, and UNKNOWN_HOST, which nothing does.
# With `outboundTrafficPolicy: REGISTRY_ONLY` the client's sidecar sends only the first.

EXTERNAL_HOST: Final = "api.external.example"
UNKNOWN_HOST: Final = "unknown.example"
EXTERNAL_PORT: Final = 9080
EXTERNAL_NAME: Final = "external"

# Run on the node, unprivileged: argv[1] address, argv[2] port.
EXTERNAL_APP: Final = """\
import http.server, json, sys
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = json.dumps({"served_by": "external", "host": self.headers.get("Host")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler).serve_forever()
"""

# Run in the client's app container: a GET of argv[1] for each name in argv[2:] (the `Host`),
# then ONE JSON line: per name, the status (0 when no HTTP answer came, with the error) and
# who served it.
PROBE: Final = """\
import json, sys, urllib.error, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # straight to the URL
def one(host):
    request = urllib.request.Request(sys.argv[1], headers={"Host": host})
    try:
        with opener.open(request, timeout=10) as reply:
            status, body = reply.status, reply.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    except Exception as error:
        return {"status": 0, "error": repr(error)}
    try:
        return {"status": status, "served_by": json.loads(body).get("served_by")}
    except (ValueError, AttributeError):
        return {"status": status}
print(json.dumps({"probes": [one(host) for host in sys.argv[2:]]}))
"""


@dataclass(frozen=True)
class Probe:
    """What one request of PROBE saw: the HTTP status (0: none), who served it, the error."""

    status: int
    served_by: str | None = None
    error: str | None = None

    @property
    def served_externally(self) -> bool:
        return self.status == 200 and self.served_by == EXTERNAL_NAME


def parse_probes(output: str) -> list[Probe] | None:
    """The probe's JSON line (the last line of its output), or None if there is none."""
    for line in reversed(output.strip().splitlines()):
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if isinstance(document, dict) and isinstance(document.get("probes"), list):
            return [
                Probe(status=int(one.get("status") or 0),
                      served_by=str(one["served_by"]) if one.get("served_by") else None,
                      error=str(one["error"]) if one.get("error") else None)
                for one in document["probes"] if isinstance(one, dict)
            ]  # fmt: skip
    return None


def external_url(address: str) -> str:
    return f"http://{address}:{EXTERNAL_PORT}/"


def service_entry(address: str) -> list[dict[str, Any]]:
    """EXTERNAL_HOST, outside the mesh, at `address` (STATIC: the node has no DNS name a pod
    could resolve)."""
    return [
        {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
         "metadata": {"name": "external-api", "namespace": NAMESPACE},
         "spec": {"hosts": [EXTERNAL_HOST], "location": "MESH_EXTERNAL", "resolution": "STATIC",
                  "ports": [{"number": EXTERNAL_PORT, "name": "http", "protocol": "HTTP"}],
                  "endpoints": [{"address": address}]}},
    ]  # fmt: skip


def mesh_config(revision: str, mode: str) -> list[dict[str, Any]]:
    """The revision's MeshConfig as Istio users set it: ConfigMap `istio[-REV]`, key `mesh`."""
    mesh = {"outboundTrafficPolicy": {"mode": mode}}
    return [
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": mesh_configmap_name(revision),
                      "namespace": names.CONTROL_PLANE_NAMESPACE},
         "data": {"mesh": yaml.safe_dump(mesh, sort_keys=False)}},
    ]  # fmt: skip


# --- the outcome ----------------------------------------------------------------------------

NOT_MEASURED: Final = {
    "gateway_ok": "not measured: the walk stopped before the ingress gateway step",
    "registry_only_refused": "not measured: the walk stopped before the REGISTRY_ONLY step",
}


@dataclass
class Outcomes:
    """The measured outcomes `--json` prints; None where not measured (see `reasons`)."""

    split_v2_percent: float | None = None
    split_50_v2_percent: float | None = None
    raw_success_rate: float | None = None
    retry_success_rate: float | None = None
    timeout_ms: int | None = None
    breaker_503s: int | None = None
    ejected: bool | None = None
    registry_only_refused: bool | None = None
    # What the client's sidecar answered under REGISTRY_ONLY: the undeclared host (0: no HTTP
    # answer, the connection was closed) and the ServiceEntry's host.
    registry_only_unknown_status: int | None = None
    service_entry_status: int | None = None
    gateway_ok: bool | None = None
    reasons: dict[str, str] = field(default_factory=lambda: dict(NOT_MEASURED))
    ok: bool = False
    failed_step: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "split_v2_percent": self.split_v2_percent,
            "split_50_v2_percent": self.split_50_v2_percent,
            "raw_success_rate": self.raw_success_rate,
            "retry_success_rate": self.retry_success_rate,
            "timeout_ms": self.timeout_ms,
            "breaker_503s": self.breaker_503s,
            "ejected": self.ejected,
            "registry_only_refused": self.registry_only_refused,
            "registry_only_unknown_status": self.registry_only_unknown_status,
            "service_entry_status": self.service_entry_status,
            "gateway_ok": self.gateway_ok,
            "not_measured": {k: v for k, v in self.reasons.items() if self.as_value(k) is None},
            "ok": self.ok,
            "failed_step": self.failed_step,
        }

    def as_value(self, name: str) -> Any:
        return getattr(self, name)
