"""The node agent's pure part: API objects become the kubelet's records and kube-proxy's input,
and a running pod's record becomes the status the API server is told."""

from __future__ import annotations

from typing import Any

import pytest

from sidemesh.local.model import ContainerStatus, NetworkRecord
from sidemesh.local.node_objects import (
    API_SERVICE_ENV,
    HOST_SERVICE_LABEL,
    Exposed,
    HostService,
    NodeConfigError,
    fits,
    host_backed,
    is_unscheduled,
    lease_object,
    node_object,
    node_status,
    peer_record,
    pod_record,
    pod_status,
    service_record,
)
from sidemesh.local.services import proxy_rules

NETWORK = NetworkRecord(prefix="sm-node", node_netns="sm-node-node", node_name="node-a")


def api_pod(**metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-1",
            "namespace": "demo",
            "uid": "0f3c2a9e-1111-2222-3333-444455556666",
            "creationTimestamp": "2026-01-02T03:04:05Z",
            "labels": {"app": "web"},
            **metadata,
        },
        "spec": {
            "nodeName": "node-a",
            "initContainers": [{"name": "istio-init", "image": "sidemesh"}],
            "containers": [
                {"name": "web", "image": "python", "env": [{"name": "A", "value": "1"}]},
                {"name": "istio-proxy", "image": "sidemesh"},
            ],
        },
        "status": {"phase": "Pending"},
    }


def test_a_bound_pod_becomes_a_record_with_its_sandbox_names() -> None:
    record = pod_record(api_pod(), network=NETWORK, pod_ip="10.244.0.9")
    assert (record.namespace, record.name, record.pod_ip) == ("demo", "web-1", "10.244.0.9")
    assert record.netns == "sm-node-pod-0f3c2a9e1111"
    assert record.veth == "veth0f3c2a9e"
    assert record.created == 1767323045.0
    assert "status" not in record.manifest
    assert record.deletion_requested is None


def test_containers_get_the_api_servers_service_environment_first() -> None:
    record = pod_record(api_pod(), network=NETWORK, pod_ip="10.244.0.9")
    web, proxy = record.spec["containers"]
    service_env = [{"name": k, "value": v} for k, v in API_SERVICE_ENV.items()]
    assert web["env"] == [*service_env, {"name": "A", "value": "1"}]  # its own env wins
    assert proxy["env"] == service_env
    assert record.spec["initContainers"][0]["env"] == service_env


def test_graceful_deletion_carries_the_grace_period() -> None:
    pod = api_pod(deletionTimestamp="2026-01-02T03:05:00Z", deletionGracePeriodSeconds=7)
    record = pod_record(pod, network=NETWORK, pod_ip="10.244.0.9")
    assert record.terminating
    assert record.grace_seconds == 7


@pytest.mark.parametrize(
    ("change", "unscheduled"),
    [
        ({}, True),
        ({"spec": {"nodeName": "elsewhere"}}, False),
        ({"metadata": {"deletionTimestamp": "2026-01-02T03:05:00Z"}}, False),
        ({"status": {"phase": "Succeeded"}}, False),
    ],
)
def test_which_pods_wait_for_a_node(change: dict[str, Any], unscheduled: bool) -> None:
    pod = api_pod()
    pod["spec"].pop("nodeName")
    for part, values in change.items():
        pod[part] = {**pod[part], **values}
    assert is_unscheduled(pod) is unscheduled


@pytest.mark.parametrize(
    ("spec", "fits_here"),
    [
        ({}, True),
        ({"nodeSelector": {"kubernetes.io/os": "linux"}}, True),
        ({"nodeSelector": {"disktype": "ssd"}}, False),
        ({"schedulerName": "default-scheduler"}, True),
        ({"schedulerName": "my-scheduler"}, False),  # another scheduler's to place
    ],
)
def test_which_pending_pods_this_node_takes(spec: dict[str, Any], fits_here: bool) -> None:
    pod = api_pod()
    pod["spec"] = {**pod["spec"], **spec}
    assert fits(pod, node_object("node-a")["metadata"]["labels"]) is fits_here


def test_the_reported_status_is_what_kubectl_reads() -> None:
    record = pod_record(api_pod(), network=NETWORK, pod_ip="10.244.0.9")
    record.phase, record.initialized, record.ready = "Running", True, True
    record.init_statuses = [
        ContainerStatus(name="istio-init", state="terminated", exit_code=0, reason="Completed")
    ]
    record.statuses = [
        ContainerStatus(name="web", state="running", ready=True, started=True, started_at=1.0),
        ContainerStatus(
            name="istio-proxy", state="running", ready=True, restart_count=2, started_at=1.0
        ),
    ]
    status = pod_status(record, host_ip="10.244.0.1")
    assert status["phase"] == "Running"
    assert status["podIP"] == "10.244.0.9"
    assert status["podIPs"] == [{"ip": "10.244.0.9"}]
    assert status["hostIP"] == "10.244.0.1"
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Ready"] == conditions["ContainersReady"] == "True"
    ready = [(s["name"], s["ready"], s["restartCount"]) for s in status["containerStatuses"]]
    assert ready == [("web", True, 0), ("istio-proxy", True, 2)]
    assert status["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0


def test_peers_without_an_address_are_not_endpoints() -> None:
    assert peer_record(api_pod()) is None
    pod = api_pod()
    pod["status"] = {
        "phase": "Running",
        "podIP": "10.244.0.4",
        "conditions": [{"type": "Ready", "status": "True"}],
    }
    peer = peer_record(pod)
    assert peer is not None and peer.ready and peer.pod_ip == "10.244.0.4"


def kubernetes_service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "uid": "u1"},
        "spec": {
            "clusterIP": "10.96.0.1",
            "ports": [{"name": "https", "port": 443, "targetPort": 6443, "protocol": "TCP"}],
        },
    }


def test_a_host_backed_service_is_sent_to_the_nodes_relay() -> None:
    services, stand_ins = host_backed(
        [service_record(kubernetes_service())],
        [HostService("default", "kubernetes", 443, "127.0.0.1", 34463)],
        NETWORK.bridge_ip,
    )
    rewritten = services["default/kubernetes"]
    assert rewritten.manifest["spec"]["selector"] == {HOST_SERVICE_LABEL: "kubernetes"}
    assert [s.pod_ip for s in stand_ins] == [NETWORK.bridge_ip]
    rules = proxy_rules(services.values(), stand_ins)
    assert "-d 10.96.0.1/32 -p tcp -m tcp --dport 443" in rules
    assert f"-j DNAT --to-destination {NETWORK.bridge_ip}:34463" in rules


def test_other_services_pass_unchanged() -> None:
    service = service_record(kubernetes_service())
    services, stand_ins = host_backed([service], [], NETWORK.bridge_ip)
    assert services == {"default/kubernetes": service} and stand_ins == []


def test_headless_services_have_no_cluster_ip() -> None:
    service = kubernetes_service()
    service["spec"]["clusterIP"] = "None"
    assert service_record(service).cluster_ip is None


def test_options_parse_and_bad_ones_say_what_was_expected() -> None:
    assert HostService.parse("istio-system/istiod-r1:15012=127.0.0.1:4000") == HostService(
        "istio-system", "istiod-r1", 15012, "127.0.0.1", 4000
    )
    assert Exposed.parse("127.0.0.1:9443=istio-system/istiod-r1:443") == Exposed(
        "127.0.0.1", 9443, "istio-system", "istiod-r1", 443
    )
    with pytest.raises(NodeConfigError, match="NAMESPACE/NAME:PORT=HOST:PORT"):
        HostService.parse("istiod:15012")
    with pytest.raises(NodeConfigError, match="HOST:PORT=NAMESPACE/NAME:PORT"):
        Exposed.parse("127.0.0.1:x=istio-system/istiod:443")


def test_the_node_says_it_is_ready_and_holds_its_lease() -> None:
    status = node_status(
        "node-a", address="10.244.0.1", cpus=2, memory_bytes=4 << 30, max_pods=110, now=0.0
    )
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Ready"] == "True"
    assert {"type": "InternalIP", "address": "10.244.0.1"} in status["addresses"]
    assert status["allocatable"] == {"cpu": "2", "memory": "4194304Ki", "pods": "110"}
    lease = lease_object("node-a", "uid-1", now=1.5)
    assert lease["metadata"]["namespace"] == "kube-node-lease"
    assert lease["spec"]["holderIdentity"] == "node-a"
    assert lease["spec"]["renewTime"] == "1970-01-01T00:00:01.500000Z"
