"""Istio's traffic and telemetry resources applied with kubectl to a real API server, proved with
traffic through real sidecars.

What each test proves, with `kubectl apply`/`delete` as a user runs them: a VirtualService
fault aborts one path (and stops when deleted); DestinationRule subsets with a header route pick
the version; PeerAuthentication STRICT refuses plaintext from outside the mesh but not the mesh;
both sidecars count the client's requests (`istio_requests_total`, reporter source/destination);
a Telemetry resource turns the client side's request count off.

One API server for the module (its own, not the session's `cluster`: a node binds every
pending pod, and would run the other tests' pods), this host as its node (`sidemesh local
node`), a control plane revision run on the host (`sidemesh discovery --kube`, as its istiod
pod would run), and one app in namespace `shop`: a `client` Deployment and a `web` Service in
front of two Deployments, `web-v1` and `web-v2` (labels version=v1/v2), all injected. The web
app answers JSON naming its pod (HOSTNAME, which the node sets to the pod's name) and version
(env VERSION), and answers `/status/NNN` with status NNN so a test can mark its own requests in
the metrics.

Requests are made from the client pod's network namespace by this (root, so captured) process:
they cross the client's sidecar, mutual TLS, then the web pod's sidecar. Each wait ends on what
it waits for (an answer, a route in the client's Envoy, an exact counter), bounded by
`e2e_kit.GIVE_UP_S`.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import kubernetes_validate
import orjson
import pytest
import yaml
from e2e_kit import Cluster, ControlPlane, free_port, label_for_injection, wait_for
from test_e2e_node import MISSING, Node, _assets, _ready

from sidemesh.agent.telemetry import samples
from sidemesh.api import names
from sidemesh.cli.validate import check_document
from sidemesh.kube import testbed as kube_testbed
from sidemesh.local.naming import node_netns, pod_netns, runtime_prefix
from sidemesh.local.netns import connect_in_netns

pytestmark = pytest.mark.skipif(
    bool(MISSING), reason="; ".join(MISSING) or "needs root for network namespaces"
)
REVISION = "res-1"
NAMESPACE = "shop"
HOST = f"web.{NAMESPACE}.svc.cluster.local"
PORT = 8080
REQUESTS_TOTAL = "istio_requests_total"

# The web app: who answered (pod and version), and `/status/NNN` answered with status NNN.
WEB_APP = """
import http.server, json, os
class Answer(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_GET(self):
        code = int(self.path[8:11]) if self.path.startswith('/status/') else 200
        body = json.dumps({'pod': os.environ['HOSTNAME'], 'version': os.environ['VERSION'],
                           'path': self.path}).encode()
        self.send_response(code)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(('', 8080), Answer).serve_forever()
"""


def _web(version: str) -> str:
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web-{version}, namespace: {NAMESPACE}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web, version: {version}}}}}
  template:
    metadata: {{labels: {{app: web, version: {version}}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: python:3.12-slim
        command: [python3, -c, {orjson.dumps(WEB_APP).decode()}]
        env: [{{name: VERSION, value: {version}}}]
        ports: [{{containerPort: {PORT}}}]
        readinessProbe: {{httpGet: {{path: /, port: {PORT}}}, periodSeconds: 1}}
"""


APP = f"""
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {NAMESPACE}}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: {PORT}, targetPort: {PORT}}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: client, namespace: {NAMESPACE}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: client}}}}
  template:
    metadata: {{labels: {{app: client}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: client
        image: python:3.12-slim
        command: [python3, -c, "import time; time.sleep(10**9)"]
---{_web("v1")}---{_web("v2")}"""

FAULT = f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web-fault, namespace: {NAMESPACE}}}
spec:
  hosts: [web]
  http:
  - name: broken
    match: [{{uri: {{prefix: /broken}}}}]
    fault: {{abort: {{httpStatus: 503, percentage: {{value: 100}}}}}}
    route: [{{destination: {{host: web}}}}]
  - name: healthy
    route: [{{destination: {{host: web}}}}]
"""

VERSIONS = f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: web, namespace: {NAMESPACE}}}
spec:
  host: web
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web-versions, namespace: {NAMESPACE}}}
spec:
  hosts: [web]
  http:
  - name: asked-for-v2
    match: [{{headers: {{x-version: {{exact: v2}}}}}}]
    route: [{{destination: {{host: web, subset: v2}}}}]
  - name: everyone-else-v1
    route: [{{destination: {{host: web, subset: v1}}}}]
"""

STRICT = f"""
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: {NAMESPACE}}}
spec: {{mtls: {{mode: STRICT}}}}
"""


@dataclass(frozen=True)
class Reply:
    status: int  # 0: no HTTP answer at all (refused, reset, closed)
    body: str

    def json(self) -> Any:
        return orjson.loads(self.body)


def http_get(
    netns: str, address: str, port: int, path: str, headers: dict[str, str] | None = None
) -> Reply:
    """One GET made from inside `netns` by this process (root: not the proxy's uid, so the
    pod's capture applies)."""
    try:
        sock = connect_in_netns(netns, address, port, timeout=10)
    except OSError as exc:
        return Reply(0, f"connect: {exc}")
    connection = http.client.HTTPConnection(address, port, timeout=10)
    connection.sock = sock  # already connected, in the namespace
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return Reply(response.status, response.read().decode(errors="replace"))
    except (OSError, http.client.HTTPException) as exc:
        return Reply(0, f"{type(exc).__name__}: {exc}")
    finally:
        connection.close()


def to_web(netns: str, address: str, path: str, headers: dict[str, str] | None = None) -> Reply:
    return http_get(netns, address, PORT, path, {"Host": HOST, **(headers or {})})


@dataclass(frozen=True)
class Shop:
    cluster: Cluster
    node: Node
    plane: ControlPlane
    pods: dict[str, dict[str, Any]]  # by Deployment: client, web-v1, web-v2
    service_ip: str

    def netns(self, deployment: str) -> str:
        uid = self.pods[deployment]["metadata"]["uid"]
        return pod_netns(runtime_prefix(self.node.state / "node"), uid)

    @property
    def node_netns(self) -> str:
        return node_netns(runtime_prefix(self.node.state / "node"))

    def from_client(self, path: str, headers: dict[str, str] | None = None) -> Reply:
        """A request from the client pod to the web Service, through both sidecars."""
        return to_web(self.netns("client"), self.service_ip, path, headers)

    def metrics(self, deployment: str) -> str:
        """A pod's merged metrics (its agent's status port), from the node as a scraper."""
        address = self.pods[deployment]["status"]["podIP"]
        reply = http_get(self.node_netns, address, names.PORT_AGENT_STATUS, "/stats/prometheus")
        assert reply.status == 200, reply
        return reply.body

    def client_envoy(self, path: str) -> str:
        """The client's Envoy admin (localhost-only in its pod) answering `path`."""
        reply = http_get(self.netns("client"), "127.0.0.1", names.PORT_ENVOY_ADMIN, path)
        assert reply.status == 200, reply
        return reply.body

    def apply(self, manifest: str) -> None:
        self.cluster.kubectl("apply", "-f", "-", input=manifest)

    def delete(self, manifest: str) -> None:
        self.cluster.kubectl("delete", "-f", "-", "--ignore-not-found", input=manifest)


def _host_service(plane: ControlPlane) -> str:
    assert plane.process is not None
    arguments = [str(a) for a in plane.process.args]  # type: ignore[union-attr]
    port = arguments[arguments.index("--xds-tls-port") + 1]
    return f"istio-system/istiod-{plane.revision}:15012=127.0.0.1:{port}"


def _app_pods(cluster: Cluster) -> dict[str, dict[str, Any]] | None:
    """The three pods, once each runs with its app and sidecar ready (2/2)."""
    found: dict[str, dict[str, Any]] = {}
    for pod in cluster.pods(NAMESPACE):
        if pod["metadata"].get("deletionTimestamp"):
            continue
        app = pod["metadata"]["labels"]["app"]
        version = pod["metadata"]["labels"].get("version")
        key = f"{app}-{version}" if version else app
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        if key in found or not _ready(pod) or len(statuses) != 2:
            return None
        found[key] = pod
    return found if sorted(found) == ["client", "web-v1", "web-v2"] else None


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    work = tmp_path_factory.mktemp("istio-resources")
    testbed = kube_testbed.start_testbed(work / "testbed", _assets())
    cluster = Cluster(testbed)
    node = Node(cluster, work / "node.log")
    plane = ControlPlane(cluster, REVISION, work / "plane", webhook_port=free_port())
    try:
        plane.workdir.mkdir()
        plane.install()
        # istiod runs on the host here, not as the install's pods.
        cluster.kubectl("scale", "deployment", f"istiod-{REVISION}", "-n", "istio-system",
                        "--replicas=0")  # fmt: skip
        plane.start()
        node.start("--host-service", _host_service(plane))
        cluster.kubectl("create", "namespace", NAMESPACE)
        label_for_injection(cluster, NAMESPACE, f"istio.io/rev={REVISION}")
        cluster.kubectl("apply", "-f", "-", input=APP)
        pods = wait_for("client, web-v1 and web-v2 running 2/2", lambda: _app_pods(cluster))
        service = cluster.get_json("service", "web", "-n", NAMESPACE)
        yield Shop(cluster, node, plane, pods, str(service["spec"]["clusterIP"]))
    finally:
        plane.stop()
        node.stop()
        testbed.stop()


def test_the_manifests_are_valid() -> None:
    """What the tests apply: strict Kubernetes schemas for the app, sidemesh's own checks (those
    of `sidemesh validate` and the validating webhook) for Istio's kinds."""
    app = list(yaml.safe_load_all(APP))
    assert [d["kind"] for d in app] == ["Service", "Deployment", "Deployment", "Deployment"]
    for document in app:
        kubernetes_validate.validate(document, "1.30", strict=True)
    istio = [FAULT, VERSIONS, STRICT, NO_CLIENT_REQUEST_COUNT]
    for document in (d for text in istio for d in yaml.safe_load_all(text)):
        assert check_document(document) == (), document


def answered(what: str, request: Callable[[], Reply], status: int) -> Reply:
    """Repeat `request` until it is answered with `status` (0: refused); that reply."""

    def probe() -> Reply | None:
        reply = request()
        return reply if reply.status == status else None

    return wait_for(what, probe)


def _versions(shop: Shop, count: int, headers: dict[str, str] | None = None) -> list[str]:
    replies = [shop.from_client("/which", headers) for _ in range(count)]
    assert all(r.status == 200 for r in replies), replies
    return [r.json()["version"] for r in replies]


def test_a_virtual_service_fault_aborts_one_path_until_deleted(shop: Shop) -> None:
    def broken_path() -> Reply:
        return shop.from_client("/broken")

    answered("the client to reach web through both sidecars", broken_path, 200)

    shop.apply(FAULT)
    broken = answered("the client to see the injected fault on /broken", broken_path, 503)
    assert broken.body == "fault filter abort", broken
    others = [shop.from_client(path) for path in ("/", "/fine", "/brok")]
    assert [r.status for r in others] == [200, 200, 200], others
    assert {r.json()["version"] for r in others} <= {"v1", "v2"}

    shop.cluster.kubectl("delete", "virtualservice", "web-fault", "-n", NAMESPACE)
    healed = answered("/broken answered again once the VirtualService is gone", broken_path, 200)
    assert healed.json()["path"] == "/broken"


def test_subsets_route_by_header_to_the_version_asked_for(shop: Shop) -> None:
    subset_cluster = f"outbound|{PORT}|v2|{HOST}"
    shop.apply(VERSIONS)
    try:

        def routed() -> bool:
            routes = shop.client_envoy("/config_dump?resource=dynamic_route_configs")
            listeners = shop.client_envoy("/config_dump?resource=dynamic_listeners")
            configured = "asked-for-v2" in routes + listeners
            endpoint = f"{subset_cluster}::{shop.pods['web-v2']['status']['podIP']}:"
            return configured and endpoint in shop.client_envoy("/clusters")

        wait_for("the client's Envoy to route by header to subset v2 with its endpoint", routed)
        assert _versions(shop, 10, {"x-version": "v2"}) == ["v2"] * 10
        assert _versions(shop, 10) == ["v1"] * 10
        assert _versions(shop, 5, {"x-version": "v3"}) == ["v1"] * 5
        who = shop.from_client("/which", {"x-version": "v2"}).json()
        assert who["pod"] == shop.pods["web-v2"]["metadata"]["name"]
    finally:
        shop.delete(VERSIONS)


def test_strict_peer_authentication_refuses_plaintext_but_not_the_mesh(shop: Shop) -> None:
    web = shop.pods["web-v1"]["status"]["podIP"]

    def plaintext() -> Reply:
        return to_web(shop.node_netns, web, "/plain")

    # PERMISSIVE by default: the node, outside the mesh, is answered in plaintext.
    plain = answered("plaintext from the node answered", plaintext, 200)
    assert plain.json()["version"] == "v1"
    shop.apply(STRICT)
    try:
        refused = answered("plaintext from the node refused under STRICT", plaintext, 0)
        # Connected (the web's sidecar took the connection), then no HTTP answer: a reset.
        assert not refused.body.startswith("connect:"), refused
        replies = [shop.from_client("/mesh") for _ in range(5)]
        assert [r.status for r in replies] == [200] * 5, replies
        assert plaintext().status == 0  # still refused: not a passing blip
    finally:
        shop.delete(STRICT)


def _total(text: str, **labels: str) -> float:
    return sum(
        value
        for found, value in samples(text, REQUESTS_TOTAL)
        if all(found.get(k) == v for k, v in labels.items())
    )


def test_both_sidecars_count_the_client_requests(shop: Shop) -> None:
    """Requests answered 418 (no other test asks for it) are counted exactly: as the source by
    the client's sidecar, as the destination by the web pods' sidecars."""
    count = 7
    replies = [shop.from_client("/status/418") for _ in range(count)]
    assert [r.status for r in replies] == [418] * count, replies
    ours = {"source_workload": "client", "response_code": "418"}

    def client_counted() -> str | None:
        text = shop.metrics("client")
        return text if _total(text, reporter="source", **ours) == count else None

    def web_counted() -> list[str] | None:
        texts = [shop.metrics(w) for w in ("web-v1", "web-v2")]
        seen = sum(_total(t, reporter="destination", **ours) for t in texts)
        return texts if seen == count else None

    client_text = wait_for(f"the client's sidecar to count {count} requests", client_counted)
    web_texts = wait_for(f"the web sidecars to count {count} requests", web_counted)
    source = [labels for labels, _ in samples(client_text, REQUESTS_TOTAL)
              if labels.get("response_code") == "418"]  # fmt: skip
    assert {s["reporter"] for s in source} == {"source"}
    assert {s["destination_service_name"] for s in source} == {"web"}
    assert {s["destination_workload"] for s in source} <= {"web-v1", "web-v2"}
    assert {s["source_workload_namespace"] for s in source} == {NAMESPACE}
    destination = [labels for text in web_texts for labels, _ in samples(text, REQUESTS_TOTAL)
                   if labels.get("response_code") == "418"]  # fmt: skip
    assert {d["reporter"] for d in destination} == {"destination"}
    assert {d["connection_security_policy"] for d in destination} == {"mutual_tls"}
    assert {d["source_principal"] for d in destination} == {
        f"spiffe://cluster.local/ns/{NAMESPACE}/sa/default"
    }


NO_CLIENT_REQUEST_COUNT = f"""
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: no-client-request-count, namespace: {NAMESPACE}}}
spec:
  metrics:
  - providers: [{{name: prometheus}}]
    overrides:
    - match: {{metric: REQUEST_COUNT, mode: CLIENT}}
      disabled: true
"""


def _client_counts_requests(shop: Shop) -> bool | None:
    """Whether the client's outbound listener for web counts requests (None: not there yet)."""
    dump = orjson.loads(shop.client_envoy("/config_dump?resource=dynamic_listeners"))
    name = f"{shop.service_ip}_{PORT}"
    for entry in dump.get("configs") or []:
        if entry.get("name") == name:
            listener = orjson.dumps((entry.get("active_state") or {}).get("listener")).decode()
            assert "request_duration_milliseconds" in listener, listener[:2000]
            return '"requests_total"' in listener
    return None


def test_a_telemetry_resource_turns_off_the_client_request_count(shop: Shop) -> None:
    """Telemetry disabling REQUEST_COUNT on the CLIENT side: the client's sidecar logs the
    requests (its duration histogram counts them: the same stats logger, at the same moment)
    but no longer counts them, while the web sidecars still do."""
    assert _client_counts_requests(shop) is True
    shop.apply(NO_CLIENT_REQUEST_COUNT)
    try:
        wait_for("the client's listener without requests_total",
                 lambda: _client_counts_requests(shop) is False)  # fmt: skip
        count = 5
        replies = [shop.from_client("/status/419") for _ in range(count)]
        assert [r.status for r in replies] == [419] * count, replies
        ours = {"source_workload": "client", "response_code": "419"}

        def client_logged() -> str | None:
            text = shop.metrics("client")
            durations = sum(
                value
                for labels, value in samples(text, "istio_request_duration_milliseconds_count")
                if labels.get("reporter") == "source"
                and all(labels.get(k) == v for k, v in ours.items())
            )
            return text if durations == count else None

        client_text = wait_for(f"the client's sidecar to log {count} requests", client_logged)
        assert _total(client_text, reporter="source", **ours) == 0

        def web_counted() -> bool:
            texts = [shop.metrics(w) for w in ("web-v1", "web-v2")]
            return sum(_total(t, reporter="destination", **ours) for t in texts) == count

        wait_for(f"the web sidecars to count {count} requests", web_counted)
    finally:
        shop.delete(NO_CLIENT_REQUEST_COUNT)
    wait_for("the client's listener counting again once the Telemetry is gone",
             lambda: _client_counts_requests(shop) is True)  # fmt: skip
