"""Kubernetes-shaped objects (plain dicts, as in YAML or from the API) → mesh model pieces.

Both registries speak this: real `v1/Service`, `discovery.k8s.io/v1/EndpointSlice`, `v1/Pod`,
`networking.istio.io/v1/WorkloadEntry` and `security.istio.io/v1/PeerAuthentication` objects,
so a local-runtime directory of YAML and a cluster look alike. Errors raise ObjectError naming
the object and the field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sidemesh.api import names
from sidemesh.api.networking.validation import creation_time
from sidemesh.inject.identity import workload_of
from sidemesh.xds.model import Endpoint, MtlsMode, PeerAuthentication, Service, ServicePort
from sidemesh.xds.model import port_protocol as protocol_of

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
EXPORT_TO_ANNOTATION = "networking.istio.io/exportTo"
MODES: Mapping[str, MtlsMode | None] = {
    "STRICT": "STRICT", "PERMISSIVE": "PERMISSIVE", "DISABLE": "DISABLE", "UNSET": None,
}  # fmt: skip


class ObjectError(ValueError):
    """An object the registry cannot use; the message names it and the problem."""


def object_key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    kind = str(obj.get("kind") or "")
    name = meta.get("name")
    if not kind or not name:
        raise ObjectError("object without kind or metadata.name")
    namespace = "" if kind == "Namespace" else str(meta.get("namespace") or "default")
    return kind, namespace, str(name)


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in ((obj.get("metadata") or {}).get("labels") or {}).items()}


def _where(obj: Mapping[str, Any]) -> str:
    kind, namespace, name = object_key(obj)
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def service(obj: Mapping[str, Any], domain: str = "cluster.local") -> Service:
    _, namespace, name = object_key(obj)
    spec = obj.get("spec") or {}
    ports = []
    for index, raw in enumerate(spec.get("ports") or []):
        if str(raw.get("protocol") or "TCP").upper() != "TCP":
            continue  # UDP/SCTP are not proxied
        try:
            number = int(raw["port"])
        except (KeyError, TypeError, ValueError):
            raise ObjectError(
                f"{_where(obj)}: spec.ports[{index}].port is missing or not a number"
            ) from None
        port_name = str(raw.get("name") or "")
        target = raw.get("targetPort")
        ports.append(ServicePort(
            port=number, name=port_name,
            protocol=protocol_of(port_name, raw.get("appProtocol")),
            target_port=int(target) if isinstance(target, int) or str(target).isdigit() else target,
        ))  # fmt: skip
    cluster_ip = spec.get("clusterIP")
    vip = None if cluster_ip in (None, "", "None") else str(cluster_ip)
    # Istio's annotation: the namespaces that see the service ("." its own, "*" every one).
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    export_to = tuple(sorted({part.strip() for part in str(
        annotations.get(EXPORT_TO_ANNOTATION) or "").split(",") if part.strip()}))  # fmt: skip
    return Service(namespace, name, vip, tuple(sorted(ports)), domain, export_to=export_to)


def peer_authentication(
    obj: Mapping[str, Any], *, ignored: list[str] | None = None
) -> PeerAuthentication:
    """Checked with Istio's rules, each problem naming its field. `portLevelMtls` without a
    selector (a mesh or namespace-wide policy) is refused, as Istio's webhook refuses it;
    a registry passes `ignored` to keep such a policy with its own mode instead, as istiod
    does with one that got past the webhook, and learns why there."""
    _, namespace, name = object_key(obj)
    spec = obj.get("spec") or {}
    mode = _mode(obj, (spec.get("mtls") or {}).get("mode"), "spec.mtls.mode")
    selector = (spec.get("selector") or {}).get("matchLabels")
    port_modes = tuple(sorted(
        (_port(obj, port),
         _mode(obj, (level or {}).get("mode"), f"spec.portLevelMtls.{port}.mode"))
        for port, level in (spec.get("portLevelMtls") or {}).items()
    ))  # fmt: skip
    if port_modes and not selector:
        problem = (
            f"{_where(obj)}: spec.portLevelMtls needs spec.selector.matchLabels: port-level "
            "mTLS applies to selected workloads only, not to a mesh or namespace-wide policy"
        )
        if ignored is None:
            raise ObjectError(problem)
        ignored.append(f"{problem} (ignored; spec.mtls.mode still applies)")
    return PeerAuthentication(
        namespace=namespace,
        name=name,
        mode=mode,
        selector=tuple(sorted((str(k), str(v)) for k, v in selector.items())) if selector else None,
        port_modes=port_modes if selector else (),
        created=_created(obj),
    )


def _port(obj: Mapping[str, Any], value: Any) -> int:
    port = int(value) if isinstance(value, int) or str(value).isdigit() else 0
    if not 1 <= port <= 65535:
        raise ObjectError(f"{_where(obj)}: spec.portLevelMtls.{value}: port must be 1-65535")
    return port


def _created(obj: Mapping[str, Any]) -> float:
    """metadata.creationTimestamp in seconds; absent (a hand-written file) counts as oldest."""
    value = (obj.get("metadata") or {}).get("creationTimestamp")
    seconds = creation_time(value)
    if seconds is None:
        raise ObjectError(
            f"{_where(obj)}: metadata.creationTimestamp {value!r} is not an RFC 3339 time"
        )
    return seconds


def _mode(obj: Mapping[str, Any], value: Any, field: str) -> MtlsMode | None:
    if value is None:
        return None
    if str(value).upper() not in MODES:
        raise ObjectError(f"{_where(obj)}: {field} {value!r} is not one of {sorted(MODES)}")
    return MODES[str(value).upper()]


def _pod_facts(pod: Mapping[str, Any] | None) -> dict[str, Any]:
    if pod is None:
        return {}
    labels = _labels(pod)
    spec = pod.get("spec") or {}
    return {
        "service_account": str(spec.get("serviceAccountName") or "default"),
        # the workload Istio's telemetry names (a Deployment, not its pod), as the injector does
        "workload_name": workload_of(pod.get("metadata") or {}).name,
        "has_sidecar": labels.get(names.LABEL_TLS_MODE) == "istio",
        "labels": tuple(sorted(labels.items())),
    }


def slice_endpoints(
    endpoint_slice: Mapping[str, Any], svc: Service, pods: Mapping[tuple[str, str], Any]
) -> list[Endpoint]:
    """Endpoints of `svc` listed in one EndpointSlice (ports matched by name, like kube-proxy)."""
    by_name = {p.name: p for p in svc.ports}
    found = []
    for slice_port in endpoint_slice.get("ports") or []:
        service_port = by_name.get(str(slice_port.get("name") or ""))
        if service_port is None or slice_port.get("port") is None:
            continue
        for entry in endpoint_slice.get("endpoints") or []:
            ref = entry.get("targetRef") or {}
            pod = pods.get((str(ref.get("namespace") or svc.namespace), str(ref.get("name"))))
            ready = (entry.get("conditions") or {}).get("ready")
            facts = _pod_facts(pod if ref.get("kind") == "Pod" else None)
            for address in entry.get("addresses") or []:
                found.append(Endpoint(
                    address=str(address), port=int(slice_port["port"]),
                    service_port=service_port.port, ready=ready is not False,
                    namespace=svc.namespace, **facts,
                ))  # fmt: skip
    return found


def selected_endpoints(
    svc: Service,
    selector: Mapping[str, str],
    pods: Iterable[Mapping[str, Any]],
    workload_entries: Iterable[Mapping[str, Any]],
) -> list[Endpoint]:
    """Endpoints by label selector: Pods (when there are no EndpointSlices, as in the local
    runtime) and WorkloadEntries (always, as Istio does for Kubernetes Services)."""
    if not selector:
        return []
    found = []
    for pod in pods:
        if not _matches(selector, _labels(pod)):
            continue
        status = pod.get("status") or {}
        address = status.get("podIP")
        if not address or (pod.get("metadata") or {}).get("namespace", "default") != svc.namespace:
            continue
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        ready = conditions.get("Ready", "True") == "True"
        container_ports = {
            str(p.get("name")): int(p["containerPort"])
            for c in (pod.get("spec") or {}).get("containers") or []
            for p in c.get("ports") or [] if p.get("name") and p.get("containerPort")
        }  # fmt: skip
        for port in svc.ports:
            target = _target(port, container_ports)
            if target is not None:
                found.append(Endpoint(address=str(address), port=target, service_port=port.port,
                                      ready=ready, namespace=svc.namespace,
                                      **_pod_facts(pod)))  # fmt: skip
    for entry in workload_entries:
        spec = entry.get("spec") or {}
        labels = {str(k): str(v) for k, v in (spec.get("labels") or {}).items()}
        if not _matches(selector, labels) or not spec.get("address"):
            continue
        named = {str(k): int(v) for k, v in (spec.get("ports") or {}).items()}
        for port in svc.ports:
            target = named.get(port.name) or _target(port, named)
            if target is not None:
                found.append(Endpoint(
                    address=str(spec["address"]), port=target, service_port=port.port,
                    service_account=str(spec.get("serviceAccount") or "default"),
                    namespace=svc.namespace, workload_name=object_key(entry)[2],
                    has_sidecar=labels.get(names.LABEL_TLS_MODE) == "istio",
                    labels=tuple(sorted(labels.items())),
                ))  # fmt: skip
    return found


def _target(port: ServicePort, named_ports: Mapping[str, int]) -> int | None:
    if port.target_port is None:
        return port.port
    if isinstance(port.target_port, int):
        return port.target_port
    return named_ports.get(port.target_port)


def _matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())
