"""Ingress on the local runtime, the pure parts: which host ports NodePort and LoadBalancer
Services get (the host's loopback plays the node and the load balancer), Gateways applied and
validated like their CRD, and the registry carrying Gateways and only the TLS Secrets they
name to the control plane, which builds a gateway's listeners from them."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from local_testkit import empty_state

from sidemesh.local.apiserver import apply_objects, ensure_namespace
from sidemesh.local.model import ServiceRecord, State
from sidemesh.local.node_ports import NODE_PORT_RANGE, free_node_port
from sidemesh.local.services import HostPort, gateway_credentials, host_ports, registry_objects
from sidemesh.xds.registry_files import load_snapshot


def service(name: str, kind: str, ports: list[dict[str, Any]], *, namespace: str = "istio-ingress",
            cluster_ip: str | None = "10.96.0.30") -> ServiceRecord:  # fmt: skip
    manifest = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"type": kind, "selector": {"istio": "ingressgateway"}, "ports": ports},
    }
    return ServiceRecord(namespace=namespace, name=name, uid=name, created=1.0,
                         manifest=manifest, cluster_ip=cluster_ip)  # fmt: skip


def port(number: int, node_port: int | None = None, protocol: str = "TCP") -> dict[str, Any]:
    found: dict[str, Any] = {"name": f"p{number}", "port": number, "protocol": protocol}
    if node_port is not None:
        found["nodePort"] = node_port
    return found


def listens(records: list[ServiceRecord]) -> list[tuple[int, str]]:
    wanted, _ = host_ports(records)
    return [(p.port, f"{p.cluster_ip}:{p.service_port}") for p in wanted]


@pytest.mark.parametrize(
    ("records", "expected", "problem"),
    [
        ([service("gw", "ClusterIP", [port(80)])], [], None),
        ([service("gw", "NodePort", [port(80, 30080)])], [(30080, "10.96.0.30:80")], None),
        ([service("gw", "NodePort", [port(80)])], [], "without nodePort is not reachable"),
        ([service("gw", "LoadBalancer", [port(80), port(443, 30443)])],
         [(80, "10.96.0.30:80"), (443, "10.96.0.30:443"), (30443, "10.96.0.30:443")], None),
        ([service("gw", "LoadBalancer", [port(53, protocol="UDP")])], [], None),
        ([service("gw", "LoadBalancer", [port(80)], cluster_ip=None)], [], None),  # headless
        # the first Service (namespace/name) keeps a contested host port
        ([service("b", "LoadBalancer", [port(80)], cluster_ip="10.96.0.31"),
          service("a", "LoadBalancer", [port(80)])],
         [(80, "10.96.0.30:80")], "host port 80: istio-ingress/b:80 wants it but "
                                  "istio-ingress/a:80 has it"),
    ],
)  # fmt: skip
def test_host_ports(records: list[ServiceRecord], expected: list[tuple[int, str]],
                    problem: str | None) -> None:  # fmt: skip
    assert listens(records) == expected
    wanted, problems = host_ports(records)
    assert all(p.address == "127.0.0.1" for p in wanted)  # never every address of your host
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0]


def test_a_host_port_names_its_service() -> None:
    (found,), _ = host_ports([service("gw", "NodePort", [port(80, 30080)])])
    assert found == HostPort("127.0.0.1", 30080, "istio-ingress", "gw", "10.96.0.30", 80)
    assert found.service == "istio-ingress/gw:80"


GATEWAY = {
    "apiVersion": "networking.istio.io/v1", "kind": "Gateway",
    "metadata": {"name": "ingress", "namespace": "istio-ingress"},
    "spec": {"selector": {"istio": "ingressgateway"}, "servers": [
        {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["*"],
         "tls": {"mode": "SIMPLE", "credentialName": "ingress-cert"}},
    ]},
}  # fmt: skip


def secret(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": "istio-ingress"},
            "stringData": {"tls.crt": "not a certificate", "tls.key": "not a key"}}  # fmt: skip


def state_with(*objects: dict[str, Any]) -> State:
    state = empty_state()
    ensure_namespace(state, "istio-ingress", 1.0)
    result = apply_objects(state, list(objects), now=1.0, default_namespace="default")
    assert not result.errors, result.errors
    return state


def test_gateways_are_applied_and_validated_like_their_crd() -> None:
    state = empty_state()
    ensure_namespace(state, "istio-ingress", 1.0)
    applied = apply_objects(state, [GATEWAY], now=1.0, default_namespace="default")
    assert applied.lines == ["gateway.networking.istio.io/ingress created"]
    assert list(state.gateways) == ["istio-ingress/ingress"]
    broken = {
        **GATEWAY,
        "metadata": {"name": "broken", "namespace": "istio-ingress"},
        "spec": {"servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}}]},
    }
    refused = apply_objects(state, [broken], now=2.0, default_namespace="default")
    assert refused.errors and "at least one host" in refused.errors[0]
    assert list(state.gateways) == ["istio-ingress/ingress"]


def test_only_the_secrets_gateways_name_reach_the_registry(tmp_path: Path) -> None:
    state = state_with(GATEWAY, secret("ingress-cert"), secret("database-password"))
    chosen = gateway_credentials(state.gateways.values(), state.secrets.values())
    assert [s.name for s in chosen] == ["ingress-cert"]
    objects = registry_objects(
        state.namespaces.values(), state.services.values(), state.pods.values(), state.network,
        policies=[*state.gateways.values(), *chosen],
    )  # fmt: skip
    (tmp_path / "local.yaml").write_text(yaml.safe_dump_all(objects))
    snapshot = load_snapshot([tmp_path])
    assert [(g.namespace, g.name) for g in snapshot.gateways] == [("istio-ingress", "ingress")]
    assert "database-password" not in (tmp_path / "local.yaml").read_text()
    # handed over, but not a usable certificate: no credential (the registry logs why)
    assert snapshot.credentials == {}


def test_a_free_node_port_skips_ports_in_use() -> None:
    first = free_node_port(32767)  # the range wraps around after its last port
    assert first is not None and first in NODE_PORT_RANGE
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", first))
        other = free_node_port(first)
    assert other is not None and other != first and other in NODE_PORT_RANGE
