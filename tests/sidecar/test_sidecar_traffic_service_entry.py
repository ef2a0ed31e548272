"""ServiceEntry and `outboundTrafficPolicy: REGISTRY_ONLY` with real Envoys.

The mesh's MeshConfig says REGISTRY_ONLY. A client pod with its sidecar; two plain HTTP
servers in pods of their own, without sidecars and selected by no Service, so the mesh does not
know them: `external` becomes known through ServiceEntries, `stranger` never does. Each server
answers from the node namespace directly (no sidecar in the way), so every refusal below is
the client's sidecar's doing."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from mesh_kit import MeshKit, missing_requirement
from sidecar_kubelet import HTTP_PORT, TCP_PORT
from sidecar_netns import Process, can_connect, http_request, run, unprivileged, wait_until
from sidecar_pod import APP_GID, APP_UID, Pod

TRAFFIC_APP = Path(__file__).with_name("traffic_app.py")
EXTERNAL_HOST = "api.external.example"
DNS_HOST = "dns.external.example"
VIP_HOST = "vip.external.example"
ENTRY_VIP = "198.18.0.7"  # an address nobody owns: only the ServiceEntry gives it meaning
WILDCARD_LISTENER = f"0.0.0.0_{HTTP_PORT}"


class RegistryOnlyKit(MeshKit):
    """The kit, its control plane started with a MeshConfig saying REGISTRY_ONLY."""

    def spawn(self, name: str, netns: str, argv: list[str], *,
              env: Mapping[str, str] | None = None, stdout: bool = False) -> Process:  # fmt: skip
        if name == "discovery":
            mesh = self.workdir / "mesh.yaml"
            mesh.write_text(yaml.safe_dump({"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}))
            argv = [*argv, "--mesh-config", str(mesh)]
        return super().spawn(name, netns, argv, env=env, stdout=stdout)


@pytest.fixture(scope="module")
def kit() -> Iterator[MeshKit]:
    reason = missing_requirement()
    if reason is not None:
        pytest.skip(f"whole-sidecar test needs a real host: {reason}")
    with RegistryOnlyKit() as mesh:
        client = mesh.add_pod("client-0", app="client", service_account="client")
        servers = [mesh.add_pod(name, app=name, service_account=name)
                   for name in ("external", "stranger")]  # fmt: skip
        mesh.start_control_plane()
        for server in servers:  # no capture, no agent: plain servers outside the mesh
            _start_app(server)
        client.apply_capture()
        _start_app(client)
        client.start_agent()
        client.wait_ready()
        yield mesh


def _start_app(pod: Pod) -> None:
    argv = [*unprivileged(APP_UID, APP_GID), sys.executable, str(TRAFFIC_APP), "serve",
            "--name", pod.name, "--port", str(HTTP_PORT), "--port", str(TCP_PORT)]  # fmt: skip
    pod.app = pod.kit.spawn(f"{pod.name}-app", pod.netns, argv)
    if pod.name == "client-0":  # its inbound is captured: look from inside
        wait_until(lambda: can_connect(pod.netns, "127.0.0.1", HTTP_PORT), timeout=30,
                   what="client's app listening")  # fmt: skip
        return
    wait_until(lambda: http_request(pod.kit.node, pod.ip, HTTP_PORT).status == 200, timeout=30,
               what=f"{pod.name} answering from outside the mesh")  # fmt: skip


def configure(kit: MeshKit, *objects: dict[str, Any]) -> None:
    path = kit.registry_dir / "traffic.yaml"
    temporary = path.with_name(".traffic.yaml.tmp")
    temporary.write_text(yaml.safe_dump_all(list(objects), sort_keys=False))
    os.replace(temporary, path)


def service_entry(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
            "metadata": {"name": name, "namespace": "demo"},
            "spec": {"location": "MESH_EXTERNAL",
                     "ports": [{"number": HTTP_PORT, "name": "http", "protocol": "HTTP"}],
                     **spec}}  # fmt: skip


def entries(kit: MeshKit) -> list[dict[str, Any]]:
    external = kit.pods["external"].ip
    return [
        service_entry("api", hosts=[EXTERNAL_HOST], resolution="STATIC",
                      endpoints=[{"address": external}]),
        service_entry("dns", hosts=[DNS_HOST], resolution="DNS",
                      endpoints=[{"address": external}]),
        service_entry("vip", hosts=[VIP_HOST], addresses=[ENTRY_VIP], resolution="STATIC",
                      endpoints=[{"address": external}]),
    ]  # fmt: skip


def tally(kit: MeshKit, url: str, count: int, **headers: str) -> dict[str, Any]:
    """`count` requests by the client's app (captured by its sidecar)."""
    pod = kit.pods["client-0"]
    argv = [*unprivileged(APP_UID, APP_GID), sys.executable, str(TRAFFIC_APP), "tally", url,
            "--count", str(count)]  # fmt: skip
    for name, value in headers.items():
        argv += ["--header", f"{name}:{value}"]
    result = run(["ip", "netns", "exec", pod.netns, *argv], timeout=120)
    summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return summary


def _listeners(pod: Pod) -> dict[str, dict[str, Any]]:
    reply = pod.admin("/config_dump?resource=dynamic_listeners")
    assert reply.status == 200, reply.body
    return {e["name"]: e for e in json.loads(reply.body).get("configs") or []}


def _virtual_hosts(pod: Pod) -> list[str]:
    entry = _listeners(pod).get(WILDCARD_LISTENER)
    if entry is None:
        return []
    listener = (entry.get("active_state") or {}).get("listener") or {}
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return [v["name"] for v in manager["route_config"]["virtual_hosts"]]


def _healthy(pod: Pod, cluster: str) -> int:
    statuses = json.loads(pod.admin("/clusters?format=json").body).get("cluster_statuses") or []
    return sum(
        1 for s in statuses if s["name"] == cluster for h in s.get("host_statuses") or []
        if (h.get("health_status") or {}).get("eds_health_status", "HEALTHY") == "HEALTHY"
    )  # fmt: skip


def test_registry_only_refuses_unknown_hosts_and_passes_service_entry_hosts(kit: MeshKit) -> None:
    client = kit.pods["client-0"]
    external, stranger = kit.pods["external"].ip, kit.pods["stranger"].ip
    configure(kit, *entries(kit))
    wanted = [f"{EXTERNAL_HOST}:{HTTP_PORT}", f"{DNS_HOST}:{HTTP_PORT}", "block_all"]
    wait_until(lambda: _virtual_hosts(client) == wanted, timeout=30,
               what="the client's wildcard listener with the entries' hosts")  # fmt: skip
    wait_until(lambda: f"{ENTRY_VIP}_{HTTP_PORT}" in _listeners(client), timeout=30,
               what="the VIP entry's own listener")  # fmt: skip
    for host in (EXTERNAL_HOST, DNS_HOST, VIP_HOST):
        cluster = f"outbound|{HTTP_PORT}||{host}"
        wait_until(lambda c=cluster: _healthy(client, c) == 1, timeout=30,  # type: ignore[misc]
                   what=f"{cluster} with its endpoint")  # fmt: skip

    # The ServiceEntry hosts pass: by name (STATIC and DNS resolution) and by the entry's VIP.
    url = f"http://{external}:{HTTP_PORT}/hello"
    assert tally(kit, url, 20, Host=EXTERNAL_HOST)["pods"] == {"external": 20}
    assert tally(kit, url, 20, Host=DNS_HOST)["pods"] == {"external": 20}
    assert tally(kit, f"http://{ENTRY_VIP}:{HTTP_PORT}/", 20)["pods"] == {"external": 20}
    stats = client.stats()
    assert stats[f"cluster.outbound|{HTTP_PORT}||{EXTERNAL_HOST}.upstream_rq_200"] >= 20
    assert stats[f"cluster.outbound|{HTTP_PORT}||{DNS_HOST}.upstream_rq_200"] >= 20

    # An unknown host on a port some entry uses: Istio's block_all answers 502 ...
    refused = tally(kit, f"http://{stranger}:{HTTP_PORT}/", 10, Host="unknown.example")
    assert refused["status"] == {"502": 10}, refused
    # ... and on a port nothing uses, the connection goes to the BlackHoleCluster (closed).
    blackholed = tally(kit, f"http://{stranger}:{TCP_PORT}/", 3)
    assert blackholed["status"] == {"error": 3}, blackholed
    assert client.stats().get("cluster.BlackHoleCluster.upstream_cx_none_healthy", 0) >= 3
    # The stranger itself is fine: reached without the sidecar, it answers.
    assert http_request(kit.node, stranger, TCP_PORT).status == 200


def test_removing_the_service_entry_refuses_its_host_again(kit: MeshKit) -> None:
    client = kit.pods["client-0"]
    external = kit.pods["external"].ip
    configure(kit, *entries(kit)[1:])  # `api` gone
    wait_until(lambda: _virtual_hosts(client) == [f"{DNS_HOST}:{HTTP_PORT}", "block_all"],
               timeout=30, what="the wildcard listener without the removed host")  # fmt: skip

    refused = tally(kit, f"http://{external}:{HTTP_PORT}/", 5, Host=EXTERNAL_HOST)
    assert refused["status"] == {"502": 5}, refused
