"""VirtualService and DestinationRule with real Envoys: a client and two versions of the
backend, each with its sidecar in its own network namespace, the control plane reading them
from its registry files. Splits, header routes, retries, timeouts, circuit breaking, mirrors,
consistent hashing, TCP routes by weight, TLS routes by SNI and Sidecar scoping. Every scenario
waits until the client's Envoy holds the routes and clusters it needs (admin config_dump,
/clusters), then counts what a fixed number of requests got; bounds are wide (a 90/10 split
over 2,000 requests within ±3 points is ~10 sigma)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from mesh_kit import BACKEND, MeshKit, real_host_kit
from sidecar_kubelet import HTTP_PORT, TCP_PORT
from sidecar_netns import can_connect, run, unprivileged, wait_until
from sidecar_pod import APP_GID, APP_UID, Pod

TRAFFIC_APP = Path(__file__).with_name("traffic_app.py")
HOST = BACKEND.hostname
V1, V2 = f"outbound|80|v1|{HOST}", f"outbound|80|v2|{HOST}"
DEFAULT = f"outbound|80||{HOST}"
LISTENER = f"{BACKEND.vip}_80"
URL = f"http://{HOST}"
SUBSETS = [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]


@pytest.fixture(scope="module")
def kit() -> Iterator[MeshKit]:
    """One mesh for the module (three Envoys and the control plane take a while to start):
    client-0, backend-v1 and backend-v2 (service `backend`, labels version=v1/v2)."""
    with real_host_kit() as mesh:
        mesh.add_service(BACKEND)
        client = mesh.add_pod("client-0", app="client", service_account="client")
        backends = [mesh.add_pod(f"backend-{v}", app="backend", service_account="backend")
                    for v in ("v1", "v2")]  # fmt: skip
        for backend, version in zip(backends, ("v1", "v2"), strict=True):
            backend.manifest["metadata"]["labels"]["version"] = version
        mesh.start_control_plane()
        for pod in (*backends, client):
            pod.apply_capture()
            _start_app(pod)
            pod.start_agent()
        for pod in (*backends, client):
            pod.wait_ready()
        yield mesh


def _start_app(pod: Pod) -> None:
    argv = [*unprivileged(APP_UID, APP_GID), sys.executable, str(TRAFFIC_APP), "serve",
            "--name", pod.name, "--port", str(HTTP_PORT), "--port", str(TCP_PORT)]  # fmt: skip
    pod.app = pod.kit.spawn(f"{pod.name}-app", pod.netns, argv)
    wait_until(lambda: can_connect(pod.netns, "127.0.0.1", HTTP_PORT), timeout=30,
               what=f"{pod.name}'s app listening")  # fmt: skip


def configure(kit: MeshKit, *objects: dict[str, Any]) -> None:
    """The traffic objects of the registry (replacing the previous ones), atomically."""
    path = kit.registry_dir / "traffic.yaml"
    temporary = path.with_name(".traffic.yaml.tmp")
    temporary.write_text(yaml.safe_dump_all(list(objects), sort_keys=False))
    os.replace(temporary, path)


def virtual_service(*http: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "backend", "namespace": "demo"},
            "spec": {"hosts": ["backend"], "http": list(http)}}  # fmt: skip


def destination_rule(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "backend", "namespace": "demo"},
            "spec": {"host": "backend", "subsets": SUBSETS, **spec}}  # fmt: skip


def to(subset: str, weight: int | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"destination": {"host": "backend", "subset": subset}}
    if weight is not None:
        found["weight"] = weight
    return found


def client(kit: MeshKit) -> Pod:
    return kit.pods["client-0"]


def _dump(pod: Pod, resource: str) -> list[dict[str, Any]]:
    reply = pod.admin(f"/config_dump?resource={resource}")
    assert reply.status == 200, reply.body
    configs: list[dict[str, Any]] = json.loads(reply.body).get("configs") or []
    return configs


def route_names(pod: Pod) -> list[str]:
    """Names of the routes of the backend's listener, as the client's Envoy runs it now."""
    for entry in _dump(pod, "dynamic_listeners"):
        if entry.get("name") != LISTENER:
            continue
        listener = (entry.get("active_state") or {}).get("listener") or {}
        manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
        return [r.get("name", "") for r in manager["route_config"]["virtual_hosts"][0]["routes"]]
    return []


def active_cluster(pod: Pod, name: str) -> dict[str, Any]:
    for entry in _dump(pod, "dynamic_active_clusters"):
        if entry["cluster"]["name"] == name:
            cluster: dict[str, Any] = entry["cluster"]
            return cluster
    return {}


def hosts(pod: Pod, cluster: str) -> int:
    statuses = json.loads(pod.admin("/clusters?format=json").body).get("cluster_statuses") or []
    return sum(len(s.get("host_statuses") or []) for s in statuses if s["name"] == cluster)


def wait_for_routes(kit: MeshKit, *names: str) -> None:
    pod = client(kit)
    wait_until(lambda: route_names(pod) == list(names), timeout=30,
               what=f"client's Envoy routing {names}")  # fmt: skip
    wait_until(lambda: hosts(pod, V1) == 1 and hosts(pod, V2) == 1, timeout=30,
               what="subset clusters with one endpoint each")  # fmt: skip


def tally(kit: MeshKit, path: str, count: int, *, concurrency: int = 1,
          headers: dict[str, str] | None = None, url: str = URL) -> dict[str, Any]:  # fmt: skip
    """`count` requests made by the client's app (captured, through both sidecars)."""
    pod = client(kit)
    argv = [*unprivileged(APP_UID, APP_GID), sys.executable, str(TRAFFIC_APP), "tally",
            url + path, "--count", str(count), "--concurrency", str(concurrency)]  # fmt: skip
    for name, value in (headers or {}).items():
        argv += ["--header", f"{name}:{value}"]
    result = run(["ip", "netns", "exec", pod.netns, *argv], timeout=180)
    summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return summary


def test_weighted_split_90_10(kit: MeshKit) -> None:
    configure(kit, virtual_service({"name": "split", "route": [to("v1", 90), to("v2", 10)]}),
              destination_rule())  # fmt: skip
    wait_for_routes(kit, "split")

    result = tally(kit, "/split", 2000, concurrency=4)
    assert result["status"] == {"200": 2000}, result
    share = result["pods"].get("backend-v2", 0) / 2000
    assert 0.07 <= share <= 0.13, result
    assert result["pods"]["backend-v1"] + result["pods"].get("backend-v2", 0) == 2000


def test_header_routes_jason_to_v2(kit: MeshKit) -> None:
    configure(kit, virtual_service(
        {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}],
         "route": [to("v2")]},
        {"name": "everyone-else", "route": [to("v1")]},
    ), destination_rule())  # fmt: skip
    wait_for_routes(kit, "jason", "everyone-else")

    jason = tally(kit, "/reviews", 200, headers={"end-user": "jason"})
    assert jason["pods"] == {"backend-v2": 200}, jason
    others = tally(kit, "/reviews", 200, headers={"end-user": "alice"})
    assert others["pods"] == {"backend-v1": 200}, others


def test_retries_turn_a_half_failing_backend_into_successes(kit: MeshKit) -> None:
    configure(kit, virtual_service(
        {"name": "no-retries", "match": [{"uri": {"prefix": "/flaky-raw"}}],
         "route": [to("v1")], "retries": {"attempts": 0}},
        {"name": "retries", "match": [{"uri": {"prefix": "/flaky"}}], "route": [to("v1")],
         "retries": {"attempts": 3, "retryOn": "5xx"}},
    ), destination_rule())  # fmt: skip
    wait_for_routes(kit, "no-retries", "retries")

    raw = tally(kit, "/flaky-raw", 200)  # the backend fails every other request
    assert 99 <= raw["status"].get("503", 0) <= 101, raw
    retried = tally(kit, "/flaky", 500)
    assert retried["status"].get("200", 0) >= 495, retried  # >= 99 %
    stats = client(kit).stats()
    assert stats.get(f"cluster.{V1}.upstream_rq_retry", 0) >= 200


def test_timeout_is_answered_504(kit: MeshKit) -> None:
    configure(kit, virtual_service(
        {"name": "slow", "match": [{"uri": {"prefix": "/slow"}}], "route": [to("v1")],
         "timeout": "500ms", "retries": {"attempts": 0}},
        {"name": "rest", "route": [to("v1")]},
    ), destination_rule())  # fmt: skip
    wait_for_routes(kit, "slow", "rest")

    slow = tally(kit, "/slow?seconds=5", 3)
    assert slow["status"] == {"504": 3}, slow
    quick = tally(kit, "/quick", 3)
    assert quick["status"] == {"200": 3}, quick


def test_circuit_breaker_answers_503_under_concurrent_load(kit: MeshKit) -> None:
    pool = {"tcp": {"maxConnections": 1},
            "http": {"http1MaxPendingRequests": 1, "maxRequestsPerConnection": 1}}  # fmt: skip
    configure(kit, destination_rule(trafficPolicy={"connectionPool": pool}))
    pod = client(kit)

    def limited() -> bool:
        thresholds = (active_cluster(pod, DEFAULT).get("circuit_breakers") or {}).get(
            "thresholds"
        ) or [{}]
        return thresholds[0].get("max_connections") == 1 and route_names(pod) == [""]

    wait_until(limited, timeout=30, what="client's Envoy with the connection pool limits")
    wait_until(lambda: hosts(pod, DEFAULT) == 2, timeout=30, what="backend endpoints")
    overflow = f"cluster.{DEFAULT}.upstream_rq_pending_overflow"
    before = pod.stats().get(overflow, 0)

    # 20 requests at once, each held 2 s by the backend: one connection, one pending, the
    # rest refused by the client's sidecar at once.
    result = tally(kit, "/slow?seconds=2", 20, concurrency=20)
    assert set(result["status"]) <= {"200", "503"}, result
    assert result["status"].get("503", 0) >= 10, result
    assert result["status"].get("200", 0) >= 1, result
    assert pod.stats().get(overflow, 0) - before >= result["status"]["503"]


# --- mirror, consistent hash, TCP and TLS (SNI) routes --------------------------------------

TCP_LISTENER = f"{BACKEND.vip}_9000"
TCP_V1, TCP_V2 = f"outbound|9000|v1|{HOST}", f"outbound|9000|v2|{HOST}"


def _counter(pod: Pod, name: str) -> int:
    return pod.stats().get(name, 0)


def test_mirror_sends_a_copy_of_every_request_to_the_shadow(kit: MeshKit) -> None:
    configure(kit, virtual_service({"name": "mirrored", "route": [to("v1")],
                                    "mirror": {"host": "backend", "subset": "v2"},
                                    "mirrorPercentage": {"value": 100}}),
              destination_rule())  # fmt: skip
    wait_for_routes(kit, "mirrored")
    pod = client(kit)
    shadow = f"cluster.{V2}.upstream_rq_completed"
    before = _counter(pod, shadow)

    result = tally(kit, "/mirrored", 50)
    assert result["pods"] == {"backend-v1": 50}, result  # the caller only sees v1's answers
    wait_until(lambda: _counter(pod, shadow) - before >= 50, timeout=30,
               what="50 mirrored requests completed by backend-v2")  # fmt: skip


def test_consistent_hash_keeps_each_user_on_one_endpoint(kit: MeshKit) -> None:
    configure(kit, destination_rule(trafficPolicy={"loadBalancer": {"consistentHash": {
        "httpHeaderName": "x-user"}}}))  # fmt: skip
    pod = client(kit)
    wait_until(lambda: active_cluster(pod, DEFAULT).get("lb_policy") == "RING_HASH", timeout=30,
               what="the backend's cluster with a hash ring")  # fmt: skip
    wait_until(lambda: hosts(pod, DEFAULT) == 2, timeout=30, what="backend endpoints")

    landed = {}
    for user in ("alice", "bob", "carol", "dave", "erin", "frank"):
        result = tally(kit, "/sticky", 30, concurrency=3, headers={"x-user": user})
        assert result["status"] == {"200": 30}, result
        assert len(result["pods"]) == 1, (user, result)  # every request, one endpoint
        landed[user] = next(iter(result["pods"]))
    # Six users over two endpoints all on one is 2 * 0.5**6 = 3 %: the ring must spread them
    # (these names are fixed, so the outcome is too).
    assert set(landed.values()) == {"backend-v1", "backend-v2"}, landed


def _chains(pod: Pod) -> list[list[str]]:
    """SNI names of each filter chain of the backend's TCP listener, as Envoy runs it."""
    for entry in _dump(pod, "dynamic_listeners"):
        if entry.get("name") == TCP_LISTENER:
            listener = (entry.get("active_state") or {}).get("listener") or {}
            return [(c.get("filter_chain_match") or {}).get("server_names") or []
                    for c in listener["filter_chains"]]  # fmt: skip
    return []


def test_tcp_route_splits_connections_by_weight(kit: MeshKit) -> None:
    configure(kit, {**virtual_service(), "spec": {"hosts": ["backend"], "tcp": [
        {"match": [{"port": 9000}], "route": [
            {"destination": {"host": "backend", "subset": "v1"}, "weight": 75},
            {"destination": {"host": "backend", "subset": "v2"}, "weight": 25}]}]}},
              destination_rule())  # fmt: skip
    pod = client(kit)
    wait_until(lambda: f"cluster.{TCP_V2}.upstream_cx_total" in pod.stats()
               and '"weighted_clusters"' in pod.admin(
                   "/config_dump?resource=dynamic_listeners").body,
               timeout=30, what="the TCP listener splitting by weight")  # fmt: skip
    wait_until(lambda: hosts(pod, TCP_V1) == 1 and hosts(pod, TCP_V2) == 1, timeout=30,
               what="TCP subset clusters with one endpoint each")  # fmt: skip

    # 300 requests, each on a connection of its own: the split is per connection.
    result = tally(kit, "/over-tcp", 300, concurrency=300, url=f"http://{HOST}:9000")
    assert result["status"] == {"200": 300}, result
    v2 = result["pods"].get("backend-v2", 0)
    assert 40 <= v2 <= 115, result  # 75 expected; sd 7.5, so > 4.6 sigma either way


_HELLO = """
import socket, ssl, sys
context = ssl.create_default_context()
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
with socket.create_connection((sys.argv[1], 9000), timeout=1) as raw:
    try:
        context.wrap_socket(raw, server_hostname=sys.argv[2]).close()
    except (OSError, ssl.SSLError):
        pass  # the backend speaks no TLS (it waits; we give up): only the routing matters
"""


def test_tls_route_picks_the_destination_by_sni(kit: MeshKit) -> None:
    configure(kit, {**virtual_service(), "spec": {
        "hosts": ["backend", "*.backend.example"], "tls": [
            {"match": [{"port": 9000, "sniHosts": ["v1.backend.example"]}],
             "route": [{"destination": {"host": "backend", "subset": "v1"}}]},
            {"match": [{"port": 9000, "sniHosts": ["v2.backend.example"]}],
             "route": [{"destination": {"host": "backend", "subset": "v2"}}]}]}},
              destination_rule())  # fmt: skip
    pod = client(kit)
    wait_until(lambda: _chains(pod) == [["v1.backend.example"], ["v2.backend.example"]],
               timeout=30, what="the TCP listener with one chain per SNI")  # fmt: skip
    wait_until(lambda: hosts(pod, TCP_V1) == 1 and hosts(pod, TCP_V2) == 1, timeout=30,
               what="TCP subset clusters with one endpoint each")  # fmt: skip

    for sni, chosen, other in (("v2.backend.example", TCP_V2, TCP_V1),
                               ("v1.backend.example", TCP_V1, TCP_V2)):  # fmt: skip
        counts = {c: _counter(pod, f"cluster.{c}.upstream_cx_total") for c in (chosen, other)}
        for _ in range(3):
            run(["ip", "netns", "exec", pod.netns, *unprivileged(APP_UID, APP_GID),
                 sys.executable, "-c", _HELLO, BACKEND.vip, sni], timeout=60)  # fmt: skip
        wait_until(lambda c=chosen, n=counts[chosen]: _counter(  # type: ignore[misc]
            pod, f"cluster.{c}.upstream_cx_total") >= n + 3, timeout=30,
            what=f"3 connections with SNI {sni} through {chosen}")  # fmt: skip
        assert _counter(pod, f"cluster.{other}.upstream_cx_total") == counts[other], sni


# --- Sidecar scoping ---------------------------------------------------------------------------


def _sidecar(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
            "metadata": {"name": "default", "namespace": "demo"}, "spec": spec}  # fmt: skip


def _listener_names(pod: Pod) -> set[str]:
    """Listeners the client's Envoy runs (a removed one may linger, draining)."""
    return {e.get("name", "") for e in _dump(pod, "dynamic_listeners") if e.get("active_state")}


def test_a_sidecar_scopes_what_the_proxy_receives_and_can_refuse_the_rest(kit: MeshKit) -> None:
    pod = client(kit)
    # Egress to one other host only, REGISTRY_ONLY for this namespace (the mesh says ALLOW_ANY):
    # the backend's listener leaves the client's Envoy and its VIP meets the BlackHoleCluster.
    configure(kit, _sidecar(egress=[{"hosts": ["./other.demo.svc.cluster.local"]}],
                            outboundTrafficPolicy={"mode": "REGISTRY_ONLY"}))  # fmt: skip
    wait_until(lambda: LISTENER not in _listener_names(pod), timeout=30,
               what="the backend's listener removed from the client's Envoy")  # fmt: skip
    blackholed = "cluster.BlackHoleCluster.upstream_cx_none_healthy"
    before = _counter(pod, blackholed)
    refused = tally(kit, "/scoped", 3)
    assert refused["status"] == {"error": 3}, refused
    assert _counter(pod, blackholed) - before >= 3

    configure(kit, _sidecar(egress=[{"hosts": ["./*"]}],
                            outboundTrafficPolicy={"mode": "REGISTRY_ONLY"}))  # fmt: skip
    wait_until(lambda: LISTENER in _listener_names(pod), timeout=30,
               what="the backend's listener back in the client's Envoy")  # fmt: skip
    wait_until(lambda: hosts(pod, DEFAULT) == 2, timeout=30, what="backend endpoints")
    assert tally(kit, "/scoped", 10)["status"] == {"200": 10}
