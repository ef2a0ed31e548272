"""The request policy of one workload's inbound side: which AuthorizationPolicies and
RequestAuthentications select it, and the Envoy filters they become (jwt_authn, then RBAC).

Pure. The result is frozen and hashable (filters as canonical JSON), so it can be part of a
proxy's shape: workloads under the same policies share the same listener bytes. The same
object explains itself to `sidemesh authz check`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from sidemesh.api.networking import Resource
from sidemesh.xds import jwt_authn, rbac
from sidemesh.xds.envoy_json import canonical
from sidemesh.xds.model import MeshSnapshot


@dataclass(frozen=True)
class InboundPolicy:
    http_filters: str = "[]"  # JSON list: HTTP filters before the router
    network_filters: str = "[]"  # JSON list: network filters before tcp_proxy
    policies: tuple[str, ...] = ()  # "Kind namespace/name (ACTION)" that apply
    # For explaining only: derived from the same inputs as the filters, so left out of
    # equality and hashing (the shape is a cache key; the Envoy JSON in a rule is a dict).
    rules: tuple[rbac.TranslatedRule, ...] = field(default=(), compare=False)  # HTTP view
    notes: tuple[str, ...] = field(default=(), compare=False)  # what was made stricter, why

    def http(self) -> list[dict[str, Any]]:
        loaded: list[dict[str, Any]] = orjson.loads(self.http_filters)
        return loaded

    def network(self) -> list[dict[str, Any]]:
        loaded: list[dict[str, Any]] = orjson.loads(self.network_filters)
        return loaded


NO_POLICY = InboundPolicy()
# Workloads under the same policies share one translation (0.5 ms for a few rich policies,
# paid once per policy set instead of once per proxy). Keyed by the identities of the policy
# objects, which the entry keeps alive, so an id is never reused while its entry exists.
_MEMO: dict[tuple[int, ...], tuple[tuple[object, ...], InboundPolicy]] = {}
MEMO_SIZE = 512


@dataclass(frozen=True)
class Selected:
    """The policies that select one workload (also what the gRPC generator translates)."""

    authorizations: list[Resource[Any]]
    invalid: list[Resource[Any]]  # stand-ins of invalid AuthorizationPolicies: DENY all
    authentications: list[Resource[Any]]


def selected(snapshot: MeshSnapshot, namespace: str, labels: Mapping[str, str]) -> Selected:
    def selects(policy: Resource[Any]) -> bool:
        return rbac.applies_to(policy, root_namespace=snapshot.root_namespace,
                               namespace=namespace, labels=labels)  # fmt: skip

    return Selected(
        [p for p in snapshot.authorization_policies if selects(p)],
        [p for p in snapshot.failed_authorization_policies if selects(p)],
        [p for p in snapshot.request_authentications if selects(p)],
    )


def inbound_policy(
    snapshot: MeshSnapshot, namespace: str, labels: Mapping[str, str]
) -> InboundPolicy:
    chosen = selected(snapshot, namespace, labels)
    authorizations, invalid = chosen.authorizations, chosen.invalid
    authentications = chosen.authentications
    if not authorizations and not invalid and not authentications:
        return NO_POLICY
    inputs = (*authorizations, *invalid, *authentications, snapshot.jwks)
    key = tuple(id(item) for item in inputs)
    found = _MEMO.get(key)
    if found is not None and all(a is b for a, b in zip(found[0], inputs, strict=True)):
        return found[1]
    if len(_MEMO) >= MEMO_SIZE:
        _MEMO.clear()
    policy = _translate(authorizations, invalid, authentications, snapshot.jwks)
    _MEMO[key] = (inputs, policy)
    return policy


def _translate(
    authorizations: list[Resource[Any]],
    invalid: list[Resource[Any]],
    authentications: list[Resource[Any]],
    jwks: Mapping[str, str],
) -> InboundPolicy:
    """`invalid`: stand-ins of invalid AuthorizationPolicies, each a DENY of everything."""
    providers = jwt_authn.providers(authentications, jwks)
    actions = rbac.actions_of([*authorizations, *invalid])
    http_rules = rbac.translate([*authorizations, *invalid], tcp=False)
    tcp_rules = rbac.translate([*authorizations, *invalid], tcp=True)
    jwt_filter = jwt_authn.jwt_authn_filter(providers)
    http = ([jwt_filter] if jwt_filter else []) + rbac.rbac_filters(http_rules, actions,
                                                                     tcp=False)  # fmt: skip
    network = rbac.rbac_filters(tcp_rules, actions, tcp=True)
    notes = [f"{r.name}: {r.note}" for r in http_rules if r.note]
    http_notes = {r.name: r.note for r in http_rules}
    notes += [f"{r.name} on TCP ports: {r.note}" for r in tcp_rules
              if r.note and r.note != http_notes.get(r.name)]  # fmt: skip
    notes += [f"RequestAuthentication {p.name}: {p.note}" for p in providers if p.note]
    notes += [f"AuthorizationPolicy {p.namespace}/{p.name} is invalid: it denies every request "
              "until fixed (sidemesh validate names the problem)" for p in invalid]  # fmt: skip
    described = [f"AuthorizationPolicy {p.namespace}/{p.name} ({p.spec.action})"
                 for p in authorizations]  # fmt: skip
    described += [f"AuthorizationPolicy {p.namespace}/{p.name} (INVALID: DENY all)"
                  for p in invalid]  # fmt: skip
    described += [f"RequestAuthentication {p.namespace}/{p.name}" for p in authentications]
    return InboundPolicy(
        http_filters=canonical(http),
        network_filters=canonical(network),
        policies=tuple(sorted(described)),
        rules=tuple(http_rules),
        notes=tuple(dict.fromkeys(notes)),
    )
