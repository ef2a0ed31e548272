"""AuthorizationPolicy for a proxyless gRPC server (gRFC A41): the RBAC HTTP filters of the
listener it asks for (`grpc_gen_inbound`), from the same translation the sidecars get
(`rbac.translate(..., grpc=True)`, which refuses what gRPC cannot evaluate as Envoy does).

gRPC is not Envoy, so the filters are laid out for it:

* DENY, then ALLOW — Istio's grpcgen emits only these two. An AUDIT policy is left out: gRPC
  ignores an RBAC filter whose action is LOG, and a proxyless server writes no access logs;
* every filter has its own name (`envoy.filters.http.rbac.DENY`, `….ALLOW`): gRPC refuses two
  HTTP filters of one name in a connection manager (gRFC A39);
* CUSTOM denies what its rules match, as for sidecars (no external authorizer here);
* an ALLOW policy without a usable rule allows nothing (Istio's grpcgen leaves the filter out
  then, which would allow every call: fail closed instead);
* a RequestAuthentication that selects the server refuses every call: gRPC has no jwt_authn
  filter (gRFC A39 and A41 register the router, fault injection and RBAC), so it could neither
  reject a bad token nor tell who a good one names.

Pure. `notes` say why something was made stricter; the generator logs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sidemesh.xds import rbac
from sidemesh.xds.envoy_json import typed
from sidemesh.xds.inbound_policy import selected
from sidemesh.xds.model import MeshSnapshot

FILTER_PREFIX: Final = "envoy.filters.http.rbac."
_RBAC: Final = "envoy.extensions.filters.http.rbac.v3.RBAC"
DENY_ALL: Final = {
    "name": f"{FILTER_PREFIX}DENY_ALL",
    # ALLOW with no policy allows nothing.
    "typed_config": typed(_RBAC, rules={"action": "ALLOW", "policies": {}}),
}


@dataclass(frozen=True)
class GrpcAuthz:
    http_filters: tuple[Mapping[str, Any], ...] = ()  # before the router
    notes: tuple[str, ...] = ()  # what was made stricter, and why
    policies: tuple[str, ...] = ()  # "Kind namespace/name" that apply


NO_AUTHZ: Final = GrpcAuthz()


def grpc_authz(snapshot: MeshSnapshot, namespace: str, labels: Mapping[str, str]) -> GrpcAuthz:
    """The RBAC filters of the gRPC server with `labels` in `namespace`."""
    chosen = selected(snapshot, namespace, labels)
    authorizations = [*chosen.authorizations, *chosen.invalid]
    if not authorizations and not chosen.authentications:
        return NO_AUTHZ
    described = [f"AuthorizationPolicy {p.namespace}/{p.name}" for p in authorizations]
    described += [f"RequestAuthentication {p.namespace}/{p.name}" for p in chosen.authentications]
    notes = [f"AuthorizationPolicy {p.namespace}/{p.name} is invalid: it denies every call "
             "until fixed" for p in chosen.invalid]  # fmt: skip
    if chosen.authentications:
        notes += [f"RequestAuthentication {p.namespace}/{p.name}: a proxyless gRPC server "
                  "cannot verify JWTs (gRPC has no jwt_authn filter): every call is refused"
                  for p in chosen.authentications]  # fmt: skip
        return GrpcAuthz((DENY_ALL,), tuple(notes), tuple(sorted(described)))
    rules = rbac.translate(authorizations, tcp=False, grpc=True)
    actions = rbac.actions_of(authorizations)
    if "AUDIT" in actions:
        notes.append("AUDIT policies are left out: gRPC ignores RBAC's LOG action and a "
                     "proxyless server writes no access logs")  # fmt: skip
    notes += [f"{rule.name}: {rule.note}" for rule in rules if rule.note]
    filters = []
    for found in rbac.rbac_filters(rules, actions - {"AUDIT"}, tcp=False):
        action = found["typed_config"]["rules"]["action"]
        filters.append({**found, "name": f"{FILTER_PREFIX}{action}"})
    return GrpcAuthz(tuple(filters), tuple(dict.fromkeys(notes)), tuple(sorted(described)))
