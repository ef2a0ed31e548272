"""`get`, as a pure function from the state to what kubectl would print."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import yaml

from sidemesh.local.labels import LabelError, parse_selector
from sidemesh.local.model import (
    DeploymentRecord,
    ObjectRecord,
    PodRecord,
    ServiceRecord,
    State,
    key,
)
from sidemesh.local.objects import pod_object, stored_object
from sidemesh.local.table import (
    deployments_table,
    events_table,
    namespaces_table,
    pods_table,
    services_table,
)


@dataclass(frozen=True)
class GetRequest:
    kind: str  # Pod, Namespace, Service, Deployment, ConfigMap, Secret, ServiceAccount, Event
    names: tuple[str, ...] = ()
    namespace: str = "default"
    all_namespaces: bool = False
    selector: str = ""
    show_labels: bool = False
    output: str | None = None  # wide, yaml, json, name


@dataclass(frozen=True)
class GetResult:
    out: str = ""
    err: str = ""
    code: int = 0


def _objects(objects: list[dict[str, Any]], output: str, *, single: bool) -> str:
    document: Any = objects[0] if single else {"apiVersion": "v1", "kind": "List", "items": objects}
    if output == "json":
        return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"
    return str(yaml.safe_dump(document, sort_keys=False))


def failing_creates(state: State, namespace: str | None) -> list[str]:
    """Event lines for replica sets that cannot create their pods (admission refused them):
    kubectl shows these only in `get events`; a pod that was never created has no row."""
    lines = []
    for replicaset in sorted(state.replicasets.values(), key=lambda r: r.name):
        if not replicaset.create_failures or (namespace and replicaset.namespace != namespace):
            continue
        obj = f"replicaset/{replicaset.name}"
        events = [
            e
            for e in state.events
            if e.object == obj
            and e.reason == "FailedCreate"
            and e.namespace == replicaset.namespace
        ]
        if events:
            lines.append(f"Warning  FailedCreate  {obj}  {events[-1].message}")
    return lines


def deployment_counts(
    state: State, deployment: DeploymentRecord
) -> tuple[DeploymentRecord, int, int, int]:
    owned = [
        r
        for r in state.replicasets.values()
        if r.namespace == deployment.namespace and r.deployment == deployment.name
    ]
    newest = max(owned, key=lambda r: r.revision, default=None)
    pods = [
        p
        for p in state.pods.values()
        if p.namespace == deployment.namespace
        and not p.terminating
        and any(p.owner == r.name for r in owned)
    ]
    ready = sum(1 for p in pods if p.ready)
    up_to_date = sum(1 for p in pods if newest is not None and p.owner == newest.name)
    return deployment, ready, up_to_date, ready


def _select_pods(state: State, request: GetRequest) -> list[PodRecord]:
    chosen = parse_selector(request.selector)
    pods = [
        p
        for p in state.pods.values()
        if (request.all_namespaces or p.namespace == request.namespace) and chosen.matches(p.labels)
    ]
    if request.names:
        missing = [n for n in request.names if key(request.namespace, n) not in state.pods]
        if missing:
            raise LookupError(f'Error from server (NotFound): pods "{missing[0]}" not found')
        pods = [p for p in pods if p.name in request.names]
    return sorted(pods, key=lambda p: (p.namespace, p.name))


def get(state: State | None, request: GetRequest, *, now: float) -> GetResult:
    where = "" if request.all_namespaces else f" in {request.namespace} namespace"
    none_found = f"No resources found{where}.\n"
    if state is None:
        return GetResult(err=none_found)
    try:
        if request.kind == "Pod":
            return _get_pods(state, request, now, none_found)
        chosen = parse_selector(request.selector)
    except LabelError as exc:
        return GetResult(err=f"error: {exc}\n", code=1)
    except LookupError as exc:
        return GetResult(err=f"{exc.args[0]}\n", code=1)
    if request.kind == "Namespace":
        spaces = [
            n
            for n in sorted(state.namespaces.values(), key=lambda n: n.name)
            if chosen.matches(n.labels) and (not request.names or n.name in request.names)
        ]
        return GetResult(out=namespaces_table(spaces, now=now, show_labels=request.show_labels))
    if request.kind == "Event":
        events = [
            e for e in state.events if request.all_namespaces or e.namespace == request.namespace
        ]
        if not events:
            return GetResult(err=none_found)
        return GetResult(out=events_table(sorted(events, key=lambda e: e.last), now=now))
    tables: Mapping[str, Mapping[str, ObjectRecord]] = {
        "Service": state.services,
        "Deployment": state.deployments,
        "ConfigMap": state.configmaps,
        "Secret": state.secrets,
        "ServiceAccount": state.serviceaccounts,
        "PeerAuthentication": state.peerauthentications,
        "VirtualService": state.virtualservices,
        "DestinationRule": state.destinationrules,
        "Gateway": state.gateways,
        "AuthorizationPolicy": state.authorizationpolicies,
        "RequestAuthentication": state.requestauthentications,
        "ServiceEntry": state.serviceentries,
        "Sidecar": state.sidecars,
        "Telemetry": state.telemetries,
    }
    records = sorted(
        (
            r
            for r in tables[request.kind].values()
            if (request.all_namespaces or r.namespace == request.namespace)
            and (not request.names or r.name in request.names)
            and chosen.matches((r.manifest.get("metadata") or {}).get("labels") or {})
        ),
        key=lambda r: (r.namespace, r.name),
    )
    if request.output in ("yaml", "json"):
        return GetResult(
            out=_objects(
                [stored_object(r) for r in records], request.output, single=len(request.names) == 1
            )
        )
    if not records:
        return GetResult(err=none_found)
    if request.kind == "Service":
        services = [r for r in records if isinstance(r, ServiceRecord)]
        return GetResult(out=services_table(services, now=now))
    if request.kind == "Deployment":
        rows = [deployment_counts(state, r) for r in records if isinstance(r, DeploymentRecord)]
        return GetResult(out=deployments_table(rows, now=now))
    return GetResult(out="".join(f"{request.kind.lower()}/{r.name}\n" for r in records))


def _get_pods(state: State, request: GetRequest, now: float, none_found: str) -> GetResult:
    pods = _select_pods(state, request)
    warnings = failing_creates(state, None if request.all_namespaces else request.namespace)
    err = "".join(f"{line}\n" for line in warnings)
    if request.output in ("yaml", "json"):
        objects = [pod_object(p, host_ip=state.network.bridge_ip) for p in pods]
        single = len(request.names) == 1 and len(objects) == 1
        return GetResult(out=_objects(objects, request.output, single=single), err=err)
    if request.output == "name":
        return GetResult(out="".join(f"pod/{p.name}\n" for p in pods), err=err)
    if not pods:
        return GetResult(err=none_found + err)
    table = pods_table(
        pods,
        now=now,
        all_namespaces=request.all_namespaces,
        show_labels=request.show_labels,
        wide=request.output == "wide",
    )
    return GetResult(out=table, err=err)
