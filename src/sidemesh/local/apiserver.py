"""What the API server does with `apply`, `label`, `delete` and `rollout restart`: pure
changes to the state, answered with kubectl's words.

Pods are the exception: creating one needs mutating admission (an HTTPS call), so `apply`
returns the pods it was given and the caller admits them, then stores them with
`store_admitted_pod`.
"""

from __future__ import annotations

import base64
import copy
import datetime
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sidemesh.api import kube_names
from sidemesh.local.labels import LabelResult, LabelUpdate, apply_label_update
from sidemesh.local.mesh_config import is_mesh_configmap, mesh_problem
from sidemesh.local.model import (
    AuthorizationPolicyRecord,
    ConfigMapRecord,
    DeploymentRecord,
    DestinationRuleRecord,
    GatewayRecord,
    NamespaceRecord,
    ObjectRecord,
    PeerAuthenticationRecord,
    PodRecord,
    RequestAuthenticationRecord,
    SecretRecord,
    ServiceAccountRecord,
    ServiceEntryRecord,
    ServiceRecord,
    SidecarRecord,
    State,
    TelemetryRecord,
    VirtualServiceRecord,
    key,
)
from sidemesh.local.naming import generate_name, new_uid
from sidemesh.rollout.mutability import difference
from sidemesh.rollout.plan import apply_merge_patch
from sidemesh.xds import convert

SYSTEM_NAMESPACES = ("default", "kube-node-lease", "kube-public", "kube-system")
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
FIRST_SERVICE_OFFSET = 10  # .0.1 is the `kubernetes` service's address in a cluster
FIRST_POD_OFFSET = 2  # .0.1 is the node's bridge

# kind -> (the State attribute holding it, kubectl's resource word, record type)
_KINDS: dict[str, tuple[str, str, type[ObjectRecord]]] = {
    "Deployment": ("deployments", "deployment.apps", DeploymentRecord),
    "Service": ("services", "service", ServiceRecord),
    "ConfigMap": ("configmaps", "configmap", ConfigMapRecord),
    "Secret": ("secrets", "secret", SecretRecord),
    "ServiceAccount": ("serviceaccounts", "serviceaccount", ServiceAccountRecord),
    "PeerAuthentication": (
        "peerauthentications",
        "peerauthentication.security.istio.io",
        PeerAuthenticationRecord,
    ),
    "VirtualService": (
        "virtualservices",
        "virtualservice.networking.istio.io",
        VirtualServiceRecord,
    ),
    "DestinationRule": (
        "destinationrules",
        "destinationrule.networking.istio.io",
        DestinationRuleRecord,
    ),
    "Gateway": ("gateways", "gateway.networking.istio.io", GatewayRecord),
    "AuthorizationPolicy": (
        "authorizationpolicies",
        "authorizationpolicy.security.istio.io",
        AuthorizationPolicyRecord,
    ),
    "RequestAuthentication": (
        "requestauthentications",
        "requestauthentication.security.istio.io",
        RequestAuthenticationRecord,
    ),
    "ServiceEntry": (
        "serviceentries",
        "serviceentry.networking.istio.io",
        ServiceEntryRecord,
    ),
    "Sidecar": ("sidecars", "sidecar.networking.istio.io", SidecarRecord),
    "Telemetry": ("telemetries", "telemetry.telemetry.istio.io", TelemetryRecord),
}
SUPPORTED_KINDS = ("Namespace", "Pod", *_KINDS)
# Istio kinds checked at apply by their group's `validate` (PeerAuthentication by `convert`).
ISTIO_CHECKED_KINDS = frozenset({"VirtualService", "DestinationRule", "Gateway", "ServiceEntry",
                                 "Sidecar", "AuthorizationPolicy", "RequestAuthentication",
                                 "Telemetry"})  # fmt: skip


class ApiError(Exception):
    """A request the API server refuses; str() is kubectl's message."""


def ensure_system_namespaces(state: State, now: float) -> None:
    for name in SYSTEM_NAMESPACES:
        ensure_namespace(state, name, now)


def ensure_namespace(state: State, name: str, now: float) -> NamespaceRecord:
    record = state.namespaces.get(name)
    if record is None:
        record = NamespaceRecord(
            name=name, uid=new_uid(), created=now, labels={NAMESPACE_NAME_LABEL: name}
        )
        state.namespaces[name] = record
    return record


def _metadata(obj: Mapping[str, Any]) -> dict[str, Any]:
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _require_namespace(state: State, namespace: str) -> None:
    if namespace not in state.namespaces:
        raise ApiError(f'Error from server (NotFound): namespaces "{namespace}" not found')


def _free_address(
    cidr: str, used: Iterable[str | None], first: int, after: str | None = None
) -> str:
    """The first free address from `first` on, or, given `after`, the first one following it
    (wrapping): addresses are not reused sooner than they must be."""
    network = ipaddress.ip_network(cidr)
    taken = {u for u in used if u}
    size = network.num_addresses - 1 - first
    start = 0
    if after is not None and ipaddress.ip_address(after) in network:
        start = (int(ipaddress.ip_address(after)) - int(network.network_address) - first + 1) % size
    for step in range(size):
        candidate = str(network.network_address + first + (start + step) % size)
        if candidate not in taken:
            return candidate
    raise ApiError(f"Internal error occurred: range {cidr} is full")


def allocate_pod_ip(state: State) -> str:
    """Round-robin, like host-local IPAM: a new pod rarely gets an address that the node still
    remembers (in its ARP cache) as some deleted pod's."""
    used = (p.pod_ip for p in state.pods.values())
    address = _free_address(
        state.network.pod_cidr, used, FIRST_POD_OFFSET, after=state.network.last_pod_ip
    )
    state.network.last_pod_ip = address
    return address


def _cluster_ip(state: State, manifest: Mapping[str, Any], current: str | None) -> str | None:
    asked = (manifest.get("spec") or {}).get("clusterIP")
    if asked in ("None",):
        return None
    if current:
        return current
    used = [s.cluster_ip for s in state.services.values()]
    if asked:
        if ipaddress.ip_address(asked) not in ipaddress.ip_network(state.network.service_cidr):
            raise ApiError(
                f'The Service is invalid: spec.clusterIP: Invalid value: "{asked}": '
                f"provided IP is not in the valid range {state.network.service_cidr}"
            )
        if asked in used:
            raise ApiError(
                f'The Service is invalid: spec.clusterIP: Invalid value: "{asked}": '
                "provided IP is already allocated"
            )
        return str(asked)
    return _free_address(state.network.service_cidr, used, FIRST_SERVICE_OFFSET)


def three_way_merge(last: Any, new: Any, live: Any) -> Any:
    """`kubectl apply`'s merge for maps: fields the new manifest sets win, fields removed from
    the manifest since the last apply go, fields someone else set (a label, `restartedAt`)
    stay. Lists are replaced whole."""
    if not (isinstance(new, dict) and isinstance(live, dict)):
        return copy.deepcopy(new)
    previous = last if isinstance(last, dict) else {}
    merged: dict[str, Any] = {}
    for name, value in live.items():
        if name in new:
            merged[name] = three_way_merge(previous.get(name), new[name], value)
        elif name not in previous:
            merged[name] = copy.deepcopy(value)
    for name, value in new.items():
        if name not in merged:
            merged[name] = copy.deepcopy(value)
    return merged


def _normalise_secret(manifest: dict[str, Any]) -> dict[str, Any]:
    data = dict(manifest.get("data") or {})
    for name, value in (manifest.pop("stringData", None) or {}).items():
        data[name] = base64.b64encode(str(value).encode()).decode()
    manifest["data"] = data
    return manifest


def object_data(record: ObjectRecord) -> dict[str, str]:
    """A ConfigMap's or Secret's data as text (Secrets decoded)."""
    data = record.manifest.get("data") or {}
    if isinstance(record, SecretRecord):
        return {k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()}
    return {str(k): str(v) for k, v in data.items()}


@dataclass
class ApplyResult:
    lines: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    pods: list[dict[str, Any]] = field(default_factory=list)  # to admit, then store


def apply_objects(
    state: State, documents: Iterable[Any], *, now: float, default_namespace: str
) -> ApplyResult:
    result = ApplyResult()
    for document in documents:
        if not isinstance(document, dict):
            continue
        items = document.get("items") if document.get("kind") == "List" else [document]
        for obj in items or []:
            try:
                _apply_one(state, copy.deepcopy(obj), now, default_namespace, result)
            except ApiError as exc:
                result.errors.append(str(exc))
    return result


def refused_objects(
    state: State, batches: Iterable[tuple[str, list[Any]]], *, now: float, default_namespace: str
) -> list[str]:
    """What applying every (source, documents) batch in order would refuse, each error naming
    its file as kubectl does; worked out on a copy of the state, so nothing is stored."""
    trial = copy.deepcopy(state)
    refused: list[str] = []
    for source, documents in batches:
        result = apply_objects(trial, documents, now=now, default_namespace=default_namespace)
        refused += [name_file(error, source) for error in result.errors]
    return refused


def name_file(error: str, source: str) -> str:
    """kubectl's words for a refusal of an object from a file."""
    if error.startswith("Error from server (NotFound)"):
        return error.replace(": ", f': error when creating "{source}": ', 1)
    return error


def _apply_one(
    state: State, obj: dict[str, Any], now: float, default_namespace: str, result: ApplyResult
) -> None:
    kind = str(obj.get("kind") or "")
    metadata = _metadata(obj)
    name = str(metadata.get("name") or "")
    if kind not in SUPPORTED_KINDS:
        raise ApiError(
            f'error: sidemesh local does not run kind "{kind}" (object "{name}"); '
            f"supported: {', '.join(SUPPORTED_KINDS)}"
        )
    if not name:
        raise ApiError(f"error: a {kind} needs metadata.name")
    invalid = kube_names.object_errors(kind, obj)
    if invalid:
        raise ApiError(kube_names.invalid_message(kind, name, invalid))
    if kind == "Namespace":
        existed = name in state.namespaces
        space = ensure_namespace(state, name, now)
        applied = {str(k): str(v) for k, v in (metadata.get("labels") or {}).items()}
        labels = three_way_merge(space.applied_labels, applied, space.labels)
        labels[NAMESPACE_NAME_LABEL] = name
        annotations = metadata.get("annotations") or {}
        changed = labels != space.labels
        space.labels = labels
        space.applied_labels = applied
        space.annotations = {str(k): str(v) for k, v in annotations.items()}
        verb = "configured" if changed else "unchanged"
        result.lines.append(f"namespace/{name} {verb if existed else 'created'}")
        return
    namespace = str(metadata.get("namespace") or default_namespace)
    _require_namespace(state, namespace)
    metadata["namespace"] = namespace
    obj["metadata"] = metadata
    if kind == "Pod":
        existing = state.pods.get(key(namespace, name))
        if existing is not None:
            if existing.terminating:
                raise ApiError(
                    "Error from server (AlreadyExists): object is being deleted: "
                    f'pods "{name}" already exists'
                )
            result.lines.append(f"pod/{name} unchanged")
            return
        result.pods.append(obj)
        return
    if kind == "PeerAuthentication":
        _validate_peer_authentication(obj)
    if kind in ISTIO_CHECKED_KINDS:
        _validate_istio(obj)
    if kind == "ConfigMap" and is_mesh_configmap(obj):
        problem = mesh_problem(obj)
        if problem is not None:  # what the revision's control plane would refuse to start with
            raise ApiError(f'The ConfigMap "{name}" is invalid: {problem}')
    attribute, word, record_type = _KINDS[kind]
    table: dict[str, Any] = getattr(state, attribute)
    current = table.get(key(namespace, name))
    if kind == "Secret":
        obj = _normalise_secret(obj)
    applied = copy.deepcopy(obj)
    if current is not None:
        obj = three_way_merge(current.applied, obj, current.manifest)
        if current.manifest == obj:
            current.applied = applied
            result.lines.append(f"{word}/{name} unchanged")
            return
    if kind == "Service":
        cluster_ip = _cluster_ip(state, obj, current.cluster_ip if current else None)
        record: ObjectRecord = ServiceRecord(
            namespace=namespace,
            name=name,
            manifest=obj,
            applied=applied,
            uid=current.uid if current else new_uid(),
            created=current.created if current else now,
            cluster_ip=cluster_ip,
        )
    else:
        record = record_type(
            namespace=namespace,
            name=name,
            manifest=obj,
            applied=applied,
            uid=current.uid if current else new_uid(),
            created=current.created if current else now,
        )
    table[key(namespace, name)] = record
    result.lines.append(f"{word}/{name} {'configured' if current else 'created'}")


def store_admitted_pod(
    state: State, pod: dict[str, Any], *, owner: str | None, now: float
) -> PodRecord:
    """Name (generateName), uid and node for an admitted pod; it is stored Pending."""
    metadata = _metadata(pod)
    namespace = str(metadata.get("namespace") or "default")
    name = str(metadata.get("name") or "")
    if not name:
        while True:
            name = generate_name(str(metadata.get("generateName") or "pod-"))
            if key(namespace, name) not in state.pods:
                break
    elif key(namespace, name) in state.pods:
        raise ApiError(f'Error from server (AlreadyExists): pods "{name}" already exists')
    uid = new_uid()
    timestamp = datetime.datetime.fromtimestamp(now, datetime.UTC)
    metadata.update(
        name=name,
        namespace=namespace,
        uid=uid,
        creationTimestamp=timestamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    pod["metadata"] = metadata
    pod.setdefault("spec", {})["nodeName"] = state.network.node_name
    record = PodRecord(
        namespace=namespace, name=name, uid=uid, created=now, manifest=pod, owner=owner
    )
    state.pods[key(namespace, name)] = record
    return record


def label_namespace(
    state: State, name: str, update: LabelUpdate, *, overwrite: bool
) -> LabelResult:
    record = state.namespaces.get(name)
    if record is None:
        raise ApiError(f'Error from server (NotFound): namespaces "{name}" not found')
    if NAMESPACE_NAME_LABEL in update.remove or update.set.get(NAMESPACE_NAME_LABEL, name) != name:
        raise ApiError(
            f"error: label {NAMESPACE_NAME_LABEL} is set by the API server and cannot be changed"
        )
    result = apply_label_update(record.labels, update, overwrite=overwrite)
    record.labels = result.labels
    return result


IN_PLACE_FIELDS = (
    "`spec.containers[*].image`, `spec.initContainers[*].image`, "
    "`spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations)"
)


def patch_pod(state: State, namespace: str, name: str, patch: Mapping[str, Any]) -> str:
    """A JSON merge patch of a running pod, refused as the API server refuses it when it
    changes more than a running pod may change (the pod's worker then follows the change)."""
    record = state.pods.get(key(namespace, name))
    if record is None:
        raise ApiError(f'Error from server (NotFound): pods "{name}" not found')
    if record.terminating:
        raise ApiError(f'Error from server (Conflict): pod "{name}" is being deleted')
    metadata = patch.get("metadata")
    if isinstance(metadata, Mapping):  # no resourceVersions here: each change is a transaction
        patch = {**patch, "metadata": {k: v for k, v in metadata.items() if k != "resourceVersion"}}
    patched = apply_merge_patch(record.manifest, patch)
    if not isinstance(patched, dict):
        raise ApiError("error: a merge patch of a pod must be an object")
    found = difference(record.manifest, patched)
    if found.blockers:
        fields = ", ".join(b.path for b in found.blockers)
        raise ApiError(
            f'The Pod "{name}" is invalid: spec: Forbidden: pod updates may not change fields '
            f"other than {IN_PLACE_FIELDS} (changed: {fields})"
        )
    record.manifest = patched
    return f"pod/{name} patched"


def rollout_restart(state: State, namespace: str, names: Iterable[str], now: float) -> list[str]:
    """Stamp `kubectl.kubernetes.io/restartedAt` on the pod templates (all when no names)."""
    wanted = list(names)
    chosen = [
        d
        for d in state.deployments.values()
        if d.namespace == namespace and (not wanted or d.name in wanted)
    ]
    for missing in sorted(set(wanted) - {d.name for d in chosen}):
        raise ApiError(f'Error from server (NotFound): deployments.apps "{missing}" not found')
    stamp = datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat(timespec="seconds")
    lines = []
    for deployment in sorted(chosen, key=lambda d: d.name):
        template = deployment.manifest.setdefault("spec", {}).setdefault("template", {})
        template.setdefault("metadata", {}).setdefault("annotations", {})[RESTARTED_AT] = stamp
        lines.append(f"deployment.apps/{deployment.name} restarted")
    return lines


def delete_pods(
    state: State,
    namespace: str,
    names: Iterable[str],
    *,
    everything: bool,
    now: float,
    grace_seconds: int | None = None,
) -> list[str]:
    """Mark pods for graceful deletion; returns their names."""
    wanted = list(names)
    if everything:
        chosen = [p for p in state.pods.values() if p.namespace == namespace]
    else:
        chosen = []
        for name in wanted:
            pod = state.pods.get(key(namespace, name))
            if pod is None:
                raise ApiError(f'Error from server (NotFound): pods "{name}" not found')
            chosen.append(pod)
    for pod in chosen:
        if pod.deletion_requested is None:
            pod.deletion_requested = now
        if grace_seconds is not None:
            pod.grace_seconds = grace_seconds
    return sorted(p.name for p in chosen)


def delete_object(state: State, kind: str, namespace: str, name: str, now: float) -> str:
    """`kubectl delete KIND NAME`; a Namespace takes everything in it along."""
    if kind == "Pod":
        delete_pods(state, namespace, [name], everything=False, now=now)
        return f'pod "{name}" deleted'
    if kind == "Namespace":
        if name not in state.namespaces:
            raise ApiError(f'Error from server (NotFound): namespaces "{name}" not found')
        if name in SYSTEM_NAMESPACES:
            raise ApiError(f'Error from server (Forbidden): namespace "{name}" may not be deleted')
        for attribute, _, _ in _KINDS.values():
            table: dict[str, ObjectRecord] = getattr(state, attribute)
            for object_key in [k for k, v in table.items() if v.namespace == name]:
                del table[object_key]
        delete_pods(state, name, [], everything=True, now=now)
        del state.namespaces[name]
        return f'namespace "{name}" deleted'
    if kind not in _KINDS:
        raise ApiError(f'error: the server doesn\'t have a resource type "{kind.lower()}"')
    attribute, word, _ = _KINDS[kind]
    table = getattr(state, attribute)
    if table.pop(key(namespace, name), None) is None:
        raise ApiError(f'Error from server (NotFound): {word.split(".")[0]}s "{name}" not found')
    return f'{word.split(".")[0]} "{name}" deleted'


def _validate_peer_authentication(obj: dict[str, Any]) -> None:
    """Refuse at apply what the control plane's registry would refuse (as a CRD's schema
    would), so a typo never reaches the registry file."""
    if not str(obj.get("apiVersion") or "").startswith("security.istio.io/"):
        raise ApiError(
            f'error: PeerAuthentication "{obj["metadata"]["name"]}": apiVersion must be '
            "security.istio.io/v1 (or v1beta1)"
        )
    try:
        convert.peer_authentication(obj)
    except convert.ObjectError as exc:
        raise ApiError(f"The PeerAuthentication is invalid: {exc}") from exc


def _validate_istio(obj: dict[str, Any]) -> None:
    """Refuse at apply what the control plane's registry would skip, with the one validation
    path of the object's kind (`networking.validate`, `security.validate`,
    `telemetry.validate`), in the validating webhook's words."""
    from sidemesh.api import networking, security, telemetry  # their models load on first use

    kind = obj["kind"]
    if kind == "Telemetry":
        check: Callable[[Any], object] = telemetry.validate
    elif kind in ("AuthorizationPolicy", "RequestAuthentication"):
        check = security.validate
    else:
        check = networking.validate
    try:
        check(obj)
    except networking.ValidationError as exc:
        reasons = "; ".join(str(issue) for issue in exc.issues)
        raise ApiError(f'The {kind} "{obj["metadata"]["name"]}" is invalid: {reasons}') from exc
