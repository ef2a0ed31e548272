"""One snapshot builder behind every registry: objects in, debounced snapshots out.

Registries `upsert`/`delete` Kubernetes-shaped objects; after `debounce` seconds without a
change (but never later than `max_delay` after the first one) the builder makes a new
`MeshSnapshot` whose `changed` names the objects that changed, and publishes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from sidemesh.api import networking, security, telemetry
from sidemesh.api.config import MeshConfig
from sidemesh.api.telemetry.mesh import MeshTelemetry, mesh_telemetry
from sidemesh.xds import config_order, convert, service_entries
from sidemesh.xds.credentials import credentials_of
from sidemesh.xds.jwks_fetch import JwksFetcher, jwks_uris
from sidemesh.xds.model import Endpoint, MeshSnapshot, PeerAuthentication, Service

log = logging.getLogger("sidemesh.xds.builder")

Key = tuple[str, str, str]  # kind, namespace, name
# Traffic kinds (networking.istio.io) the generator acts on; each passes `validate` first.
TRAFFIC_KINDS = frozenset({"VirtualService", "DestinationRule", "ServiceEntry", "Sidecar",
                           "Gateway"})  # fmt: skip
# Security kinds (security.istio.io) passing `api.security.validate` first.
SECURITY_KINDS = frozenset({"AuthorizationPolicy", "RequestAuthentication"})
KINDS = frozenset({"Service", "EndpointSlice", "Pod", "WorkloadEntry", "PeerAuthentication",
                   "Namespace", "Secret", *TRAFFIC_KINDS, *SECURITY_KINDS,
                   "Telemetry"})  # fmt: skip
DEFAULT_DEBOUNCE = 0.1
DEFAULT_MAX_DELAY = 1.0


def build_snapshot(
    objects: Mapping[Key, Mapping[str, Any]],
    *,
    mesh: MeshConfig,
    version: int,
    changed: Iterable[str] = (),
    errors: list[str] | None = None,
    jwks: Mapping[str, str] | None = None,
) -> MeshSnapshot:
    """A snapshot of `objects`. An object that cannot be used is skipped and its problem
    appended to `errors` (one bad Service must not take the mesh down). `jwks`: the fetched
    documents of RequestAuthentication `jwksUri`s (`jwks_fetch`)."""
    by_kind: dict[str, list[Mapping[str, Any]]] = {}
    for (kind, _, _), obj in objects.items():
        by_kind.setdefault(kind, []).append(obj)
    problems = errors if errors is not None else []
    pods = {(k[1], k[2]): o for k, o in objects.items() if k[0] == "Pod"}
    slices: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for (kind, namespace, _), obj in objects.items():
        if kind == "EndpointSlice":
            owner = ((obj.get("metadata") or {}).get("labels") or {}).get(
                convert.SERVICE_NAME_LABEL
            )
            if owner:
                slices.setdefault((namespace, str(owner)), []).append(obj)
    services: list[Service] = []
    endpoints: dict[str, tuple[Endpoint, ...]] = {}
    entries = by_kind.get("WorkloadEntry", [])
    for obj in by_kind.get("Service", []):
        try:
            svc = convert.service(obj)
            selector = (obj.get("spec") or {}).get("selector") or {}
            own_slices = slices.get((svc.namespace, svc.name), [])
            found = [e for s in own_slices for e in convert.slice_endpoints(s, svc, pods)]
            namespace_pods = [] if own_slices else [
                p for (ns, _), p in pods.items() if ns == svc.namespace
            ]  # fmt: skip
            namespace_entries = [e for e in entries if convert.object_key(e)[1] == svc.namespace]
            found += convert.selected_endpoints(svc, selector, namespace_pods, namespace_entries)
        except (convert.ObjectError, ValueError, TypeError, KeyError) as exc:
            problems.append(str(exc))
            continue
        services.append(svc)
        endpoints[svc.hostname] = tuple(sorted(set(found)))
    policies: list[PeerAuthentication] = []
    for obj in by_kind.get("PeerAuthentication", []):
        try:
            policies.append(convert.peer_authentication(obj, ignored=problems))
        except (convert.ObjectError, ValueError, TypeError) as exc:
            problems.append(str(exc))
    traffic: dict[str, list[networking.Resource[Any]]] = {kind: [] for kind in TRAFFIC_KINDS}
    for kind in sorted(TRAFFIC_KINDS):
        for obj in by_kind.get(kind, []):
            try:
                traffic[kind].append(networking.validate(obj))
            except networking.ValidationError as exc:  # never pushed; the reason is logged
                problems.append(str(exc).replace("\n", "; "))
    failed_policies: list[networking.Resource[Any]] = []
    for kind in sorted(SECURITY_KINDS):
        traffic[kind] = []
        for obj in by_kind.get(kind, []):
            try:
                traffic[kind].append(security.validate(obj))
            except networking.ValidationError as exc:  # never pushed; the reason is logged
                reason = str(exc).replace("\n", "; ")
                stand_in = security.deny_all_stand_in(obj)
                if stand_in is not None:  # fails closed, never open
                    failed_policies.append(stand_in)
                    reason += " (until fixed it denies every request to what it selects)"
                problems.append(reason)
    traffic["Telemetry"] = []  # telemetry.istio.io, passing `api.telemetry.validate` first
    for obj in by_kind.get("Telemetry", []):
        try:
            traffic["Telemetry"].append(telemetry.validate(obj))
        except networking.ValidationError as exc:  # never pushed; the reason is logged
            problems.append(str(exc).replace("\n", "; "))
    for resources in traffic.values():
        resources.sort(key=lambda r: (r.namespace, r.name))
    for kind in config_order.OLDEST_FIRST_KINDS:  # Istio's order for conflicting config
        traffic[kind].sort(key=config_order.config_order)

    def select(svc: Service, selector: Mapping[str, str]) -> list[Endpoint]:
        return convert.selected_endpoints(
            svc, selector, [p for (ns, _), p in pods.items() if ns == svc.namespace],
            [e for e in entries if convert.object_key(e)[1] == svc.namespace],
        )  # fmt: skip

    entry_services, entry_endpoints = service_entries.entry_services(
        traffic["ServiceEntry"], [s.hostname for s in services], problems, select
    )
    services += entry_services
    endpoints.update(entry_endpoints)
    return MeshSnapshot(
        version=version,
        services=tuple(sorted(services)),
        endpoints=MappingProxyType(endpoints),
        peer_authentications=tuple(sorted(policies, key=lambda p: (p.namespace, p.name))),
        virtual_services=tuple(traffic["VirtualService"]),
        destination_rules=tuple(traffic["DestinationRule"]),
        service_entries=tuple(traffic["ServiceEntry"]),
        sidecars=tuple(traffic["Sidecar"]),
        gateways=tuple(traffic["Gateway"]),
        authorization_policies=tuple(traffic["AuthorizationPolicy"]),
        failed_authorization_policies=tuple(failed_policies),
        request_authentications=tuple(traffic["RequestAuthentication"]),
        jwks=MappingProxyType(dict(jwks or {})),
        credentials=MappingProxyType(credentials_of(by_kind.get("Secret", []), problems)),
        telemetries=tuple(traffic["Telemetry"]),
        mesh_telemetry=_mesh_telemetry(mesh, problems),
        outbound_policy=mesh.outbound_traffic_policy.mode,
        trust_domain=mesh.trust_domain,
        root_namespace=mesh.root_namespace,
        changed=frozenset(changed),
    )


def _mesh_telemetry(mesh: MeshConfig, problems: list[str]) -> MeshTelemetry:
    try:
        return mesh_telemetry(mesh)
    except ValueError as exc:  # e.g. a JSON access log format that is not a JSON object
        problems.append(f"meshConfig telemetry: {exc}")
        return MeshTelemetry()


class SnapshotBuilder:
    def __init__(
        self,
        publish: Callable[[MeshSnapshot], None],
        *,
        mesh: MeshConfig | None = None,
        debounce: float = DEFAULT_DEBOUNCE,
        max_delay: float = DEFAULT_MAX_DELAY,
    ) -> None:
        self.publish = publish
        self.mesh = mesh or MeshConfig()
        self.debounce = debounce
        self.max_delay = max_delay
        self.objects: dict[Key, Mapping[str, Any]] = {}
        self.version = 0
        self._changed: set[str] = set()
        self._dirty = asyncio.Event()
        self._last_change = 0.0
        self._reported: set[str] = set()
        self.jwks = JwksFetcher(self._jwks_changed)

    def _jwks_changed(self) -> None:
        self._changed.add("JWKS")
        self._last_change = asyncio.get_running_loop().time()
        self._dirty.set()

    def upsert(self, obj: Mapping[str, Any]) -> None:
        key = convert.object_key(obj)
        if key[0] not in KINDS or self.objects.get(key) == obj:
            return
        self.objects[key] = obj
        self._mark(key)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        key = (kind, "" if kind == "Namespace" else namespace, name)
        if self.objects.pop(key, None) is not None:
            self._mark(key)

    def replace_kind(self, kind: str, objects: Iterable[Mapping[str, Any]]) -> None:
        """Make the objects of one kind exactly `objects` (a relist or a file reload)."""
        fresh = {convert.object_key(o): o for o in objects}
        for key in [k for k in self.objects if k[0] == kind and k not in fresh]:
            self.delete(*key)
        for obj in fresh.values():
            self.upsert(obj)

    def replace_mesh(self, mesh: MeshConfig) -> None:
        """A new MeshConfig (its file changed): the next snapshot is built from it."""
        if mesh != self.mesh:
            self.mesh = mesh
            self._mark(("MeshConfig", "", "mesh"))

    def _mark(self, key: Key) -> None:
        self._changed.add("/".join(part for part in key if part))
        self._last_change = asyncio.get_running_loop().time()
        self._dirty.set()

    def build_now(self) -> MeshSnapshot:
        self.version += 1
        errors: list[str] = []
        snapshot = build_snapshot(self.objects, mesh=self.mesh, version=self.version,
                                  changed=self._changed, errors=errors,
                                  jwks=self.jwks.documents)  # fmt: skip
        self.jwks.want(jwks_uris(snapshot))
        for problem in errors:
            if problem not in self._reported:  # once per problem, not once per snapshot
                log.warning("registry object skipped: %s", problem)
        self._reported = set(errors)
        self._changed = set()
        self._dirty.clear()
        return snapshot

    async def run(self) -> None:
        """Publish a snapshot per burst of changes, forever (cancel to stop)."""
        try:
            await self._run()
        finally:
            self.jwks.stop()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._dirty.wait()
            first = loop.time()
            while True:  # wait for a quiet period, but not forever
                quiet_until = self._last_change + self.debounce
                deadline = min(quiet_until, first + self.max_delay)
                if loop.time() >= deadline:
                    break
                await asyncio.sleep(deadline - loop.time())
            snapshot = self.build_now()
            log.info("snapshot %d: %d services, changed %s", snapshot.version,
                     len(snapshot.services), sorted(snapshot.changed)[:10])  # fmt: skip
            self.publish(snapshot)
