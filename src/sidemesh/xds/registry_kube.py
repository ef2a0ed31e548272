"""A registry that follows Kubernetes: watches of Namespaces, Services, EndpointSlices, Pods,
PeerAuthentications, AuthorizationPolicies, RequestAuthentications, VirtualServices,
DestinationRules, ServiceEntries and Sidecars (lightkube), fed to the shared snapshot builder
(which validates the traffic and security kinds and skips, with the reason logged, what
`api.networking.validate` or `api.security.validate` refuses).

Each kind is listed then watched from the list's resourceVersion; a failed watch relists the
kind (the relist replaces what the builder holds, so deletions missed while disconnected are
not kept). Pods only matter for labels, service account and the sidecar label, so only those
fields are kept.

Gateways (networking.istio.io; watched at v1, which the API server serves for objects written
at any served version) are watched everywhere; the Secrets their servers name as
`credentialName` only in `credential_namespaces` (install value
`gateways.credentialNamespaces`, where the control plane's Role grants reading Secrets): a
gateway elsewhere gets no credential, and the discovery says why. Of a Secret only the
certificate fields are kept; tokens and other data never stay in memory.

With `mesh_config_map` (the revision's `istio-<rev>` ConfigMap) the MeshConfig is followed
live, as the file registry follows its mesh file (`mesh_reload_kube`, one reload rule for
both): a valid change reaches every proxy, an invalid one is logged and the last good one
kept, start-only fields wait for a restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from sidemesh.api import kube_names
from sidemesh.api.config import MeshConfig
from sidemesh.api.text import untrusted
from sidemesh.security.store import status_code
from sidemesh.xds.builder import SnapshotBuilder
from sidemesh.xds.mesh_reload import MeshReloader
from sidemesh.xds.mesh_reload_kube import MeshConfigMap, follow_mesh_config_map
from sidemesh.xds.model import MeshSnapshot

log = logging.getLogger("sidemesh.xds.registry_kube")

RETRY_SECONDS = 2.0
MISSING_KIND_RETRY_SECONDS = 60.0
# Istio's CRDs: a cluster may not serve them, and then there is simply no such configuration.
OPTIONAL_KINDS = {
    "PeerAuthentication": "using the mesh-wide mTLS default",
    "VirtualService": "default routes only",
    "DestinationRule": "default traffic policies only",
    "ServiceEntry": "Kubernetes Services only",
    "Sidecar": "every proxy sees the whole mesh",
    "AuthorizationPolicy": "no request is refused by policy",
    "RequestAuthentication": "no JWT is checked",
    "Gateway": "no gateway listeners",
    "Telemetry": "meshConfig's telemetry only",
}
# Where gateway credential Secrets are read: values `gateways.credentialNamespaces`, which the
# install passes as this variable (and grants reading Secrets there, nowhere else).
CREDENTIAL_NAMESPACES_VARIABLE = "GATEWAY_CREDENTIAL_NAMESPACES"
DEFAULT_CREDENTIAL_NAMESPACES = ("istio-system",)
_CREDENTIAL_FIELDS = frozenset({"tls.crt", "tls.key", "ca.crt", "cert", "key", "cacert"})


def _resources() -> dict[str, Any]:
    from lightkube.generic_resource import create_namespaced_resource
    from lightkube.resources.core_v1 import Namespace, Pod, Service
    from lightkube.resources.discovery_v1 import EndpointSlice

    peer_authentication = create_namespaced_resource(
        "security.istio.io", "v1", "PeerAuthentication", "peerauthentications"
    )
    virtual_service = create_namespaced_resource(
        "networking.istio.io", "v1", "VirtualService", "virtualservices"
    )
    destination_rule = create_namespaced_resource(
        "networking.istio.io", "v1", "DestinationRule", "destinationrules"
    )
    service_entry = create_namespaced_resource(
        "networking.istio.io", "v1", "ServiceEntry", "serviceentries"
    )
    sidecar = create_namespaced_resource("networking.istio.io", "v1", "Sidecar", "sidecars")
    authorization_policy = create_namespaced_resource(
        "security.istio.io", "v1", "AuthorizationPolicy", "authorizationpolicies"
    )
    request_authentication = create_namespaced_resource(
        "security.istio.io", "v1", "RequestAuthentication", "requestauthentications"
    )
    gateway = create_namespaced_resource("networking.istio.io", "v1", "Gateway", "gateways")
    telemetry = create_namespaced_resource("telemetry.istio.io", "v1", "Telemetry", "telemetries")
    return {"Namespace": Namespace, "Service": Service, "EndpointSlice": EndpointSlice,
            "Pod": Pod, "PeerAuthentication": peer_authentication,
            "VirtualService": virtual_service, "DestinationRule": destination_rule,
            "ServiceEntry": service_entry, "Sidecar": sidecar,
            "AuthorizationPolicy": authorization_policy,
            "RequestAuthentication": request_authentication,
            "Gateway": gateway, "Telemetry": telemetry}  # fmt: skip


def as_object(kind: str, resource: Any) -> dict[str, Any]:
    raw: dict[str, Any] = resource.to_dict() if hasattr(resource, "to_dict") else dict(resource)
    raw["kind"] = kind
    if kind == "Pod":  # keep what the model reads; pods change often in ways we ignore
        status = raw.get("status") or {}
        raw = {
            "kind": "Pod",
            "metadata": {k: v for k, v in (raw.get("metadata") or {}).items()
                         if k in ("name", "namespace", "labels")},
            "spec": {"serviceAccountName": (raw.get("spec") or {}).get("serviceAccountName"),
                     "containers": [{"ports": c.get("ports") or []}
                                    for c in (raw.get("spec") or {}).get("containers") or []]},
            "status": {"podIP": status.get("podIP"), "conditions": [
                {"type": c.get("type"), "status": c.get("status")}
                for c in status.get("conditions") or [] if c.get("type") == "Ready"]},
        }  # fmt: skip
    elif kind == "Secret":  # a gateway credential at most: the certificate fields, no more
        data = raw.get("data") or {}
        raw = {
            "kind": "Secret",
            "metadata": {k: v for k, v in (raw.get("metadata") or {}).items()
                         if k in ("name", "namespace")},
            "type": raw.get("type"),
            "data": {k: v for k, v in data.items() if k in _CREDENTIAL_FIELDS},
        }  # fmt: skip
    return raw


def credential_namespaces_from(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The namespaces named by GATEWAY_CREDENTIAL_NAMESPACES (comma list); a name that is not
    a namespace name is dropped, with the reason logged."""
    raw = environ.get(CREDENTIAL_NAMESPACES_VARIABLE)
    if raw is None:
        return DEFAULT_CREDENTIAL_NAMESPACES
    found: list[str] = []
    for name in (part.strip() for part in raw.split(",")):
        if not name:
            continue
        if kube_names.dns1123_label(name):
            log.warning("%s: ignoring %s, not a namespace name",
                        CREDENTIAL_NAMESPACES_VARIABLE, untrusted(name))  # fmt: skip
            continue
        found.append(name)
    return tuple(found)


class KubeRegistry:
    def __init__(
        self,
        client: Any,  # lightkube.AsyncClient
        *,
        mesh: MeshConfig | None = None,
        debounce: float = 0.1,
        kinds: Mapping[str, Any] | None = None,
        credential_namespaces: tuple[str, ...] | None = None,
        mesh_config_map: MeshConfigMap | None = None,
    ) -> None:
        self.client = client
        self.mesh = mesh or MeshConfig()
        self.debounce = debounce
        self.kinds = dict(kinds) if kinds is not None else _resources()
        if credential_namespaces is None:
            credential_namespaces = credential_namespaces_from(os.environ)
        self.credential_namespaces = tuple(dict.fromkeys(credential_namespaces))
        self.mesh_config_map = mesh_config_map  # None: `mesh` stays as given

    async def run(self, publish: Callable[[MeshSnapshot], None]) -> None:
        builder = SnapshotBuilder(publish, mesh=self.mesh, debounce=self.debounce)
        tasks = [asyncio.create_task(builder.run())]
        tasks += [
            asyncio.create_task(self._follow(builder, kind, resource))
            for kind, resource in self.kinds.items()
        ]
        if self.mesh_config_map is not None:
            reloader = MeshReloader(self.mesh)
            tasks.append(asyncio.create_task(follow_mesh_config_map(
                self.client, builder, reloader, self.mesh_config_map)))  # fmt: skip
        if "Gateway" in self.kinds and self.credential_namespaces:
            from lightkube.resources.core_v1 import Secret

            log.info("gateway credentials (credentialName Secrets) are read only in: %s",
                     ", ".join(self.credential_namespaces))  # fmt: skip
            tasks += [
                asyncio.create_task(self._follow(builder, "Secret", Secret, namespace=namespace))
                for namespace in self.credential_namespaces
            ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow(
        self, builder: SnapshotBuilder, kind: str, resource: Any, *, namespace: str = "*"
    ) -> None:
        namespaced = kind != "Namespace"
        missing_logged = False
        while True:
            try:
                scope = {"namespace": namespace} if namespaced else {}
                listed = self.client.list(resource, **scope)
                objects = [as_object(kind, item) async for item in listed]
                if namespace == "*":
                    builder.replace_kind(kind, objects)
                else:
                    _replace_in_namespace(builder, kind, namespace, objects)
                try:
                    version = listed.resourceVersion  # raises when the list was empty
                except Exception:
                    version = None
                async for event, item in self.client.watch(
                    resource, resource_version=version, **scope
                ):
                    obj = as_object(kind, item)
                    if event == "DELETED":
                        meta = obj.get("metadata") or {}
                        builder.delete(kind, str(meta.get("namespace") or ""), str(meta["name"]))
                    else:
                        builder.upsert(obj)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the API server went away, a 410 Gone, ...: relist
                if status_code(exc) == 404 and kind in OPTIONAL_KINDS:
                    # Istio's CRD is not installed: no such configuration, defaults apply.
                    # Look again now and then (someone may install it), quietly.
                    if not missing_logged:
                        log.info("%s is not served by this cluster (no CRD); %s",
                                 kind, OPTIONAL_KINDS[kind])  # fmt: skip
                        missing_logged = True
                    builder.replace_kind(kind, [])
                    await asyncio.sleep(MISSING_KIND_RETRY_SECONDS)
                    continue
                log.warning("watch of %s failed (%s: %s); relisting", kind,
                            type(exc).__name__, exc)  # fmt: skip
            await asyncio.sleep(RETRY_SECONDS)


def _replace_in_namespace(
    builder: SnapshotBuilder, kind: str, namespace: str, objects: list[dict[str, Any]]
) -> None:
    """A relist of one namespace: what is gone from it goes, other namespaces stay."""
    fresh = {str((o.get("metadata") or {}).get("name")) for o in objects}
    for key in [k for k in builder.objects if k[0] == kind and k[1] == namespace]:
        if key[2] not in fresh:
            builder.delete(*key)
    for obj in objects:
        builder.upsert(obj)
