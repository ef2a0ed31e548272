"""Services as data: endpoints, kube-proxy rules, hosts files, and the control plane's file
registry (read back with the real `sidemesh.xds.registry_files` reader)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sidemesh.local.model import NamespaceRecord, NetworkRecord, PodRecord, ServiceRecord
from sidemesh.local.services import (
    endpoints,
    hosts_file,
    proxy_rules,
    registry_objects,
    resolv_conf,
)
from sidemesh.xds.registry_files import load_objects

NETWORK = NetworkRecord(prefix="sm-test", node_netns="sm-test-node")


def pod(
    name: str,
    ip: str | None,
    *,
    ready: bool = True,
    namespace: str = "demo",
    labels: dict[str, str] | None = None,
    terminating: bool = False,
) -> PodRecord:
    manifest: dict[str, Any] = {
        "metadata": {"name": name, "labels": labels if labels is not None else {"app": "web"}},
        "spec": {
            "serviceAccountName": "web",
            "containers": [{"name": "web", "ports": [{"name": "http", "containerPort": 8080}]}],
        },
    }
    return PodRecord(
        namespace=namespace,
        name=name,
        uid=f"uid-{name}",
        created=1.0,
        manifest=manifest,
        pod_ip=ip,
        ready=ready,
        phase="Running",
        deletion_requested=1.0 if terminating else None,
    )


def service(
    name: str = "web",
    *,
    cluster_ip: str | None = "10.96.0.10",
    ports: list[dict[str, Any]] | None = None,
    namespace: str = "demo",
) -> ServiceRecord:
    ports = ports or [{"name": "http", "port": 80, "targetPort": "http"}]
    return ServiceRecord(
        namespace=namespace,
        name=name,
        uid=f"svc-{name}",
        created=1.0,
        cluster_ip=cluster_ip,
        manifest={
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"app": "web"}, "ports": ports},
        },
    )


PODS = [
    pod("web-b", "10.244.0.3"),
    pod("web-a", "10.244.0.2"),
    pod("web-c", "10.244.0.4", ready=False),
    pod("web-d", "10.244.0.5", terminating=True),
    pod("other", "10.244.0.6", labels={"app": "other"}),
    pod("elsewhere", "10.244.0.7", namespace="prod"),
]


def test_endpoints_select_by_label_namespace_and_resolve_named_ports() -> None:
    found = endpoints(service(), PODS)
    assert [(e.pod.name, e.ready, e.ports) for e in found] == [
        ("web-a", True, (("http", 8080),)),
        ("web-b", True, (("http", 8080),)),
        ("web-c", False, (("http", 8080),)),
    ]


def test_proxy_rules_balance_over_ready_endpoints() -> None:
    rules = proxy_rules([service()], PODS)
    lines = rules.splitlines()
    assert lines[0] == "*nat" and rules.count("COMMIT") == 2
    assert "-A PREROUTING -j SM-SERVICES" in lines and "-A OUTPUT -j SM-SERVICES" in lines
    assert "-A POSTROUTING -m conntrack --ctstate DNAT -j MASQUERADE" in lines
    portal = [line for line in lines if line.startswith("-A SM-SERVICES -d 10.96.0.10/32")]
    assert len(portal) == 1 and "--dport 80" in portal[0]
    chain = portal[0].rsplit(" ", 1)[1]
    picks = [line for line in lines if line.startswith(f"-A {chain} ")]
    assert "--probability 0.5000000000" in picks[0] and "statistic" not in picks[1]
    dnat = sorted(line.split("--to-destination ")[1] for line in lines if "DNAT --to" in line)
    assert dnat == ["10.244.0.2:8080", "10.244.0.3:8080"]
    assert all(len(c) <= 28 for c in [w for w in rules.split() if w.startswith("SM-")])


def test_service_without_ready_endpoints_rejects() -> None:
    rules = proxy_rules([service()], [pod("web-c", "10.244.0.4", ready=False)])
    assert "REJECT --reject-with icmp-port-unreachable" in rules
    assert "-j DNAT" not in rules


def test_hosts_file_names_services_like_cluster_dns() -> None:
    text = hosts_file(
        PODS[1], [service(), service("api", cluster_ip="10.96.0.11", namespace="prod")], PODS
    )
    lines = text.splitlines()
    assert lines[0].startswith("# Kubernetes-managed hosts file")
    assert "10.244.0.2\tweb-a" in lines
    assert "10.96.0.10\tweb web.demo web.demo.svc web.demo.svc.cluster.local" in lines
    # another namespace's service has no short name here
    assert "10.96.0.11\tapi.prod api.prod.svc api.prod.svc.cluster.local" in lines


def test_headless_service_names_its_ready_pods() -> None:
    text = hosts_file(PODS[0], [service(cluster_ip=None)], PODS)
    assert "10.244.0.2\tweb web.demo web.demo.svc web.demo.svc.cluster.local" in text
    assert "10.244.0.4\tweb" not in text


def test_resolv_conf_has_search_paths_and_no_resolver() -> None:
    assert resolv_conf("demo").splitlines() == [
        "search demo.svc.cluster.local svc.cluster.local cluster.local",
        "options ndots:5",
    ]
    assert "nameserver" not in resolv_conf("demo")


def test_registry_is_readable_by_the_control_planes_reader(tmp_path: Path) -> None:
    tls = pod("web-a", "10.244.0.2", labels={"app": "web", "security.istio.io/tlsMode": "istio"})
    objects = registry_objects(
        [NamespaceRecord(name="demo", uid="n", created=1.0, labels={"istio.io/rev": "canary"})],
        [service()],
        [tls, *PODS[2:]],
        NETWORK,
    )
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    loaded = load_objects([tmp_path])
    kinds = sorted({o["kind"] for o in loaded})
    assert kinds == ["EndpointSlice", "Namespace", "Pod", "Service"]
    (endpoint_slice,) = [o for o in loaded if o["kind"] == "EndpointSlice"]
    assert endpoint_slice["metadata"]["labels"]["kubernetes.io/service-name"] == "web"
    assert endpoint_slice["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    assert [(e["addresses"], e["conditions"]["ready"]) for e in endpoint_slice["endpoints"]] == [
        (["10.244.0.2"], True),
        (["10.244.0.4"], False),
    ]
    registered = {o["metadata"]["name"]: o for o in loaded if o["kind"] == "Pod"}
    assert "web-d" not in registered  # terminating
    assert registered["web-a"]["metadata"]["labels"]["security.istio.io/tlsMode"] == "istio"
    assert registered["web-a"]["spec"]["serviceAccountName"] == "web"
    (svc,) = [o for o in loaded if o["kind"] == "Service"]
    assert svc["spec"]["clusterIP"] == "10.96.0.10"
