"""Services, as pure data: endpoints, kube-proxy's rules, the pods' hosts files, the host ports
that reach Services from outside (`host_ports`), and the file registry the control plane reads.

kube-proxy style: a packet to a cluster IP is DNATed, in the node's network namespace, to one of
the ready endpoints chosen at random (`-m statistic`), and then masqueraded to the node's
bridge address. The masquerade is there because a reply from one pod to another on the same
bridge is bridged, not routed, so without `br_netfilter` (which we will not load on your host)
conntrack would never see it to undo the DNAT; kube-proxy's `masqueradeAll` does the same.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sidemesh.api.selectors import LabelSelector
from sidemesh.local.model import (
    NamespaceRecord,
    NetworkRecord,
    ObjectRecord,
    PodRecord,
    ServiceRecord,
)

CLUSTER_DOMAIN = "cluster.local"
REGISTRY_MANAGER = "sidemesh-local"


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    protocol: str
    target: int | str


@dataclass(frozen=True)
class Endpoint:
    pod: PodRecord
    ready: bool
    ports: tuple[tuple[str, int], ...]  # service port name -> the pod's port


def service_ports(service: ServiceRecord) -> list[ServicePort]:
    ports = []
    for raw in (service.manifest.get("spec") or {}).get("ports") or []:
        port = int(raw["port"])
        target = raw.get("targetPort", port)
        ports.append(
            ServicePort(
                name=str(raw.get("name") or ""),
                port=port,
                protocol=str(raw.get("protocol") or "TCP").upper(),
                target=int(target) if str(target).isdigit() else str(target),
            )
        )
    return ports


def service_selector(service: ServiceRecord) -> dict[str, str] | None:
    selector = (service.manifest.get("spec") or {}).get("selector")
    if not selector:
        return None  # no selector: no managed endpoints (as in Kubernetes)
    return {str(k): str(v) for k, v in selector.items()}


def container_port(pod: PodRecord, name: str) -> int | None:
    for group in ("containers", "initContainers"):
        for container in pod.spec.get(group) or []:
            for port in container.get("ports") or []:
                if port.get("name") == name and port.get("containerPort"):
                    return int(port["containerPort"])
    return None


def endpoints(service: ServiceRecord, pods: Iterable[PodRecord]) -> list[Endpoint]:
    """Pods the service selects that have an address: ready and not-ready ones, terminating
    ones excluded; ordered by pod name so the rules are stable."""
    selector = service_selector(service)
    if selector is None:
        return []
    chosen = LabelSelector(match_labels=selector)
    ports = service_ports(service)
    found = []
    for pod in sorted(pods, key=lambda p: p.name):
        if pod.namespace != service.namespace or not pod.pod_ip or pod.terminating:
            continue
        if pod.phase in ("Succeeded", "Failed") or not chosen.matches(pod.labels):
            continue
        resolved = []
        for port in ports:
            target = (
                port.target if isinstance(port.target, int) else container_port(pod, port.target)
            )
            if target is not None:
                resolved.append((port.name, target))
        found.append(Endpoint(pod=pod, ready=pod.ready, ports=tuple(resolved)))
    return found


def _chain(prefix: str, *parts: str) -> str:
    digest = hashlib.sha256("/".join(parts).encode()).digest()
    return prefix + base64.b32encode(digest).decode()[:16]


def proxy_rules(services: Iterable[ServiceRecord], pods: Iterable[PodRecord]) -> str:
    """The whole nat and filter tables of the node namespace, for `iptables-restore`."""
    pod_list = list(pods)
    chains: list[str] = []
    nat: list[str] = [
        "-A PREROUTING -j SM-SERVICES",
        "-A OUTPUT -j SM-SERVICES",
        "-A POSTROUTING -m conntrack --ctstate DNAT -j MASQUERADE",
    ]
    reject: list[str] = []
    for service in sorted(services, key=lambda s: (s.namespace, s.name)):
        if not service.cluster_ip:
            continue
        ready = [e for e in endpoints(service, pod_list) if e.ready]
        for port in service_ports(service):
            where = f"{service.namespace}/{service.name}:{port.name or port.port}"
            protocol = port.protocol.lower()
            match = f"-d {service.cluster_ip}/32 -p {protocol} -m {protocol} --dport {port.port}"
            targets = [(e.pod.pod_ip, dict(e.ports).get(port.name)) for e in ready]
            targets = [(ip, p) for ip, p in targets if ip and p]
            if not targets:
                reject.append(
                    f'-A SM-SERVICES {match} -m comment --comment "{where} has no endpoints" '
                    "-j REJECT --reject-with icmp-port-unreachable"
                )
                continue
            service_chain = _chain(
                "SM-SVC-", service.namespace, service.name, port.name, str(port.port)
            )
            chains.append(service_chain)
            nat.append(f'-A SM-SERVICES {match} -m comment --comment "{where}" -j {service_chain}')
            for index, (ip, target_port) in enumerate(targets):
                endpoint_chain = _chain("SM-SEP-", service_chain, f"{ip}:{target_port}")
                chains.append(endpoint_chain)
                remaining = len(targets) - index
                pick = (
                    f"-m statistic --mode random --probability {1 / remaining:.10f} "
                    if remaining > 1
                    else ""
                )
                nat.append(f"-A {service_chain} {pick}-j {endpoint_chain}")
                nat.append(
                    f"-A {endpoint_chain} -p {port.protocol.lower()} -m {port.protocol.lower()} "
                    f"-j DNAT --to-destination {ip}:{target_port}"
                )
    lines = [
        "*nat",
        ":PREROUTING ACCEPT [0:0]",
        ":INPUT ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        ":POSTROUTING ACCEPT [0:0]",
        ":SM-SERVICES - [0:0]",
    ]
    lines += [f":{chain} - [0:0]" for chain in chains]
    lines += [
        *nat,
        "COMMIT",
        "*filter",
        ":INPUT ACCEPT [0:0]",
        ":FORWARD ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        ":SM-SERVICES - [0:0]",
        "-A FORWARD -j SM-SERVICES",
        "-A OUTPUT -j SM-SERVICES",
        *reject,
        "COMMIT",
    ]
    return "\n".join(lines) + "\n"


# --- from the host: NodePort and LoadBalancer Services --------------------------------------
#
# The runtime is a one-node cluster whose node, as seen from the host, is the host's loopback:
# a Service of type NodePort is reachable at 127.0.0.1:<nodePort> of each port that names one
# (Kubernetes would allocate a missing nodePort; we do not invent ports on your host), and a
# LoadBalancer Service is its own load balancer at 127.0.0.1:<port> (as kind's and k3s's
# built-in balancers make it), plus its nodePorts. This is how an ingress gateway Deployment
# behind `type: LoadBalancer` takes requests from the host. The node agent relays each such
# host port to the Service's cluster IP inside (`node_ports.HostPortRelays`); kube-proxy's rules
# pick the endpoint as for any other client.

HOST_ADDRESS = "127.0.0.1"
EXPOSED_TYPES = ("NodePort", "LoadBalancer")


@dataclass(frozen=True, order=True)
class HostPort:
    """A port on the host that reaches one Service port inside."""

    address: str
    port: int
    namespace: str
    name: str
    cluster_ip: str
    service_port: int

    @property
    def service(self) -> str:
        return f"{self.namespace}/{self.name}:{self.service_port}"


def host_ports(services: Iterable[ServiceRecord]) -> tuple[list[HostPort], list[str]]:
    """The host ports that NodePort/LoadBalancer Services ask for, and why any is not given
    (the first Service by namespace/name keeps a contested port)."""
    wanted: list[HostPort] = []
    problems: list[str] = []
    taken: dict[tuple[str, int], HostPort] = {}
    for service in sorted(services, key=lambda s: (s.namespace, s.name)):
        spec = service.manifest.get("spec") or {}
        kind = spec.get("type") or "ClusterIP"
        if kind not in EXPOSED_TYPES or not service.cluster_ip:
            continue
        for raw in spec.get("ports") or []:
            if str(raw.get("protocol") or "TCP").upper() != "TCP":
                continue  # the relays carry TCP only
            port = int(raw["port"])
            ports = [port] if kind == "LoadBalancer" else []
            node_port = raw.get("nodePort")
            if node_port is not None:
                ports.append(int(node_port))
            elif kind == "NodePort":
                problems.append(f"Service {service.namespace}/{service.name} port {port}: "
                                "type NodePort without nodePort is not reachable from the host "
                                "(set spec.ports[].nodePort)")  # fmt: skip
            for number in ports:
                candidate = HostPort(HOST_ADDRESS, number, service.namespace, service.name,
                                     service.cluster_ip, port)  # fmt: skip
                held = taken.get((HOST_ADDRESS, number))
                if held is not None:
                    if held.service != candidate.service:
                        problems.append(f"host port {number}: {candidate.service} wants it but "
                                        f"{held.service} has it")  # fmt: skip
                    continue
                taken[(HOST_ADDRESS, number)] = candidate
                wanted.append(candidate)
    return sorted(wanted), problems


# --- names ----------------------------------------------------------------------------------


def service_hostnames(service: ServiceRecord, *, from_namespace: str) -> list[str]:
    base = f"{service.name}.{service.namespace}"
    names_ = [base, f"{base}.svc", f"{base}.svc.{CLUSTER_DOMAIN}"]
    if service.namespace == from_namespace:
        names_.insert(0, service.name)
    return names_


def hosts_file(pod: PodRecord, services: Iterable[ServiceRecord], pods: Iterable[PodRecord]) -> str:
    """The pod's /etc/hosts: the kubelet's header and the pod's own name, then every Service
    (short name only within the pod's namespace), the way cluster DNS would answer."""
    lines = [
        "# Kubernetes-managed hosts file (sidemesh local runtime).",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
    ]
    if pod.pod_ip:
        lines.append(f"{pod.pod_ip}\t{pod.name}")
    pod_list = list(pods)
    for service in sorted(services, key=lambda s: (s.namespace, s.name)):
        hostnames = " ".join(service_hostnames(service, from_namespace=pod.namespace))
        if service.cluster_ip:
            lines.append(f"{service.cluster_ip}\t{hostnames}")
            continue
        for endpoint in endpoints(service, pod_list):  # headless: the pods themselves
            if endpoint.ready:
                lines.append(f"{endpoint.pod.pod_ip}\t{hostnames}")
    return "\n".join(lines) + "\n"


def resolv_conf(namespace: str) -> str:
    # No nameserver: every name a pod needs is in its hosts file, and a lookup of anything
    # else fails at once instead of leaking to the host's resolver.
    return (
        f"search {namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}\n"
        "options ndots:5\n"
    )


# --- the control plane's file registry ------------------------------------------------------


def registry_objects(
    namespaces: Iterable[NamespaceRecord],
    services: Iterable[ServiceRecord],
    pods: Iterable[PodRecord],
    network: NetworkRecord,
    *,
    policies: Iterable[ObjectRecord] = (),
) -> list[dict[str, Any]]:
    """Namespaces, Services, EndpointSlices, Pods and mesh policies (PeerAuthentication) as
    Kubernetes objects, for the control plane's file registry (`sidemesh.xds.registry_files`)."""
    pod_list = sorted((p for p in pods if p.pod_ip), key=lambda p: (p.namespace, p.name))
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": n.name, "labels": dict(n.labels)},
        }
        for n in sorted(namespaces, key=lambda n: n.name)
    ]
    for service in sorted(services, key=lambda s: (s.namespace, s.name)):
        manifest = {**service.manifest, "apiVersion": "v1", "kind": "Service"}
        manifest["metadata"] = {
            **(manifest.get("metadata") or {}),
            "namespace": service.namespace,
            "name": service.name,
            "uid": service.uid,
        }
        manifest["spec"] = {
            **(manifest.get("spec") or {}),
            "clusterIP": service.cluster_ip or "None",
        }
        objects.append(manifest)
        objects += _endpoint_slices(service, pod_list, network)
    objects += [_registry_pod(pod) for pod in pod_list if not pod.terminating]
    for policy in sorted(policies, key=lambda p: (p.namespace, p.name)):
        objects.append(
            {
                **policy.manifest,
                "metadata": {
                    **(policy.manifest.get("metadata") or {}),
                    "namespace": policy.namespace,
                    "name": policy.name,
                    "uid": policy.uid,
                    "creationTimestamp": _timestamp(policy.created),
                },
            }
        )
    return objects


def gateway_credentials(
    gateways: Iterable[ObjectRecord], secrets: Iterable[ObjectRecord]
) -> list[ObjectRecord]:
    """The Secrets some Gateway server names as its `credentialName` (any namespace: the
    control plane hands one only to gateway proxies of the Secret's own namespace). No other
    Secret leaves the runtime's store for the registry."""
    named = {
        str((server.get("tls") or {}).get("credentialName") or "")
        for gateway in gateways
        for server in (gateway.manifest.get("spec") or {}).get("servers") or []
        if isinstance(server, dict)
    } - {""}
    return [s for s in secrets if s.name in named]


def _timestamp(seconds: float) -> str:
    # PeerAuthentication's tie-break is "oldest wins", as in Istio.
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _endpoint_slices(
    service: ServiceRecord, pods: list[PodRecord], network: NetworkRecord
) -> list[dict[str, Any]]:
    ports = {p.name: p for p in service_ports(service)}
    by_ports: dict[tuple[tuple[str, int], ...], list[Endpoint]] = {}
    for endpoint in endpoints(service, pods):
        by_ports.setdefault(endpoint.ports, []).append(endpoint)
    slices = []
    for index, (resolved, members) in enumerate(sorted(by_ports.items())):
        slices.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{service.name}-{index}",
                    "namespace": service.namespace,
                    "labels": {
                        "kubernetes.io/service-name": service.name,
                        "endpointslice.kubernetes.io/managed-by": REGISTRY_MANAGER,
                    },
                },
                "addressType": "IPv4",
                "endpoints": [
                    {
                        "addresses": [e.pod.pod_ip],
                        "conditions": {"ready": e.ready, "serving": e.ready, "terminating": False},
                        "nodeName": network.node_name,
                        "targetRef": {
                            "kind": "Pod",
                            "name": e.pod.name,
                            "namespace": e.pod.namespace,
                            "uid": e.pod.uid,
                        },
                    }
                    for e in members
                ],
                "ports": [
                    {"name": name, "port": port, "protocol": ports[name].protocol}
                    for name, port in resolved
                    if name in ports
                ],
            }
        )
    return slices


def _registry_pod(pod: PodRecord) -> dict[str, Any]:
    containers = [
        {"name": c.get("name"), "ports": c.get("ports") or []}
        for c in pod.spec.get("containers") or []
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod.name,
            "namespace": pod.namespace,
            "uid": pod.uid,
            "labels": pod.labels,
            "annotations": pod.annotations,
        },
        "spec": {
            "serviceAccountName": pod.spec.get("serviceAccountName") or "default",
            "nodeName": pod.spec.get("nodeName"),
            "containers": containers,
        },
        "status": {
            "phase": pod.phase,
            "podIP": pod.pod_ip,
            "podIPs": [{"ip": pod.pod_ip}],
            "conditions": [{"type": "Ready", "status": "True" if pod.ready else "False"}],
        },
    }
