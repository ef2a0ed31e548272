"""AuthorizationPolicy → Envoy RBAC filters for a workload's inbound chains. Pure.

Istio's layout: one RBAC filter per action, in the order AUDIT (action LOG: never refuses,
only marks the request for access logs), DENY (CUSTOM folds in here, see below), ALLOW — so a
DENY wins over any ALLOW, and with no ALLOW policy the ALLOW filter is absent (allow all) while
an ALLOW policy without rules is a filter with no policies (allow nothing). HTTP chains get
`envoy.filters.http.rbac` (403), TCP chains `envoy.filters.network.rbac` (connection closed).

Every rule becomes one Envoy policy `ns[NS]-policy[NAME]-rule[I]`: `permissions` hold what the
request is for (to, destination.*, connection.sni), `principals` who sends it (from and the
other `when` keys). Fail closed, never open:

* a TCP chain cannot see HTTP attributes: an ALLOW (or AUDIT) rule using one is dropped there
  (it allows nothing), a DENY rule loses those conditions and so denies more (Istio's rule);
* a rule that cannot be translated at all is dropped from ALLOW and becomes deny-everything in
  DENY; CUSTOM (an external authorizer sidemesh does not run) denies what its rules match;
* for a proxyless gRPC server (`grpc=True`, gRFC A41) what gRPC cannot evaluate as Envoy does
  is untranslatable: JWT attributes (no jwt_authn: Envoy metadata never matches there),
  `connection.sni` (always empty) and headers gRPC refuses (`grpc-*`, `:scheme`) or never
  shows (hop-by-hop) — a never-matching condition would open a DENY rule, or, negated, an
  ALLOW rule.
The reasons are returned with the filters so `sidemesh authz check` can show them.

Here: policies and rules; `when` conditions in `rbac_conditions`, value matchers in
`rbac_matchers`.
"""

# mypy: disable-error-code="import-untyped"

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from envoy.extensions.filters.http.rbac.v3 import rbac_pb2  # noqa: F401  (registers the type)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2  # noqa: F401

from sidemesh.api.networking import Resource
from sidemesh.api.security.authorization_policy import (
    OPERATION_FIELDS,
    SOURCE_FIELDS,
    AuthorizationPolicy,
    Operation,
    Rule,
    Source,
)
from sidemesh.xds.envoy_json import typed
from sidemesh.xds.rbac_conditions import NO_JWT, HttpOnly, RuleContext, condition_match
from sidemesh.xds.rbac_matchers import (
    ANY,
    JWT_FILTER,
    JWT_PAYLOAD,
    Untranslatable,
    cidr,
    field_match,
    host,
    namespace_principal,
    principal,
    request_principal,
    url_path,
)

# Re-exported: imported from here by the rest of xds and by the analysers.
__all__ = [
    "ACTION_ORDER", "ANY", "JWT_FILTER", "JWT_PAYLOAD", "TranslatedRule", "Untranslatable",
    "actions_of", "applies_to", "rbac_filters", "translate",
]  # fmt: skip

# Envoy's order of our filters; AUDIT first so that a denied request is still marked.
ACTION_ORDER = ("AUDIT", "DENY", "ALLOW")
_ENVOY_ACTION = {"AUDIT": "LOG", "DENY": "DENY", "ALLOW": "ALLOW"}


@dataclass(frozen=True)
class TranslatedRule:
    policy: str  # namespace/name
    name: str  # the Envoy policy name
    action: str  # ALLOW, DENY or AUDIT (CUSTOM folded into DENY)
    envoy: Mapping[str, Any] | None  # None: dropped (see `note`)
    note: str = ""


def applies_to(
    policy: Resource[Any], *, root_namespace: str, namespace: str, labels: Mapping[str, str]
) -> bool:
    """Whether a policy (AuthorizationPolicy or RequestAuthentication) selects a sidecar
    workload: Istio's rule. Root namespace policies apply mesh-wide (their selector picks
    workloads in every namespace); others to their own namespace. `targetRef(s)` attach to
    gateways and waypoints, never to a sidecar."""
    spec = policy.spec
    if spec.target_ref is not None or spec.target_refs:
        return False
    if policy.namespace not in (namespace, root_namespace):
        return False
    selector = spec.selector.match_labels if spec.selector is not None else {}
    return all(labels.get(key) == value for key, value in selector.items())


def translate(
    policies: Iterable[Resource[AuthorizationPolicy]], *, tcp: bool, grpc: bool = False
) -> list[TranslatedRule]:
    """Every rule of `policies` (already chosen for one workload), for HTTP or TCP chains;
    `grpc`: for a proxyless gRPC server's HTTP filter chain."""
    found: list[TranslatedRule] = []
    for policy in sorted(policies, key=lambda p: (p.namespace, p.name)):
        spec = policy.spec
        action = "DENY" if spec.action == "CUSTOM" else spec.action
        for index, rule in enumerate(spec.rules or ()):
            name = f"ns[{policy.namespace}]-policy[{policy.name}]-rule[{index}]"
            where = f"{policy.namespace}/{policy.name}"
            note = ""
            if spec.action == "CUSTOM":
                provider = spec.provider.name if spec.provider else ""
                note = (f"CUSTOM provider {provider!r} is not available in sidemesh: "
                        "what the rule matches is denied")  # fmt: skip
            context = RuleContext(
                tcp=tcp, strict=action != "DENY", namespace=policy.namespace, grpc=grpc
            )
            try:
                envoy = _rule(rule, context)
                if context.dropped:
                    dropped = ", ".join(dict.fromkeys(context.dropped))
                    stricter = f"{dropped} need HTTP and are left out on TCP: it denies more"
                    note = f"{note}; {stricter}" if note else stricter
            except (HttpOnly, Untranslatable) as exc:
                if action == "DENY":
                    envoy, note = (
                        {"permissions": [ANY], "principals": [ANY]},
                        (f"cannot be translated ({exc}): denies every request"),
                    )
                else:
                    envoy, note = None, f"cannot be translated ({exc}): allows nothing"
            found.append(TranslatedRule(where, name, action, envoy, note))
    return found


def rbac_filters(rules: Sequence[TranslatedRule], actions: Iterable[str], *,
                 tcp: bool, stat_prefix: str = "") -> list[dict[str, Any]]:  # fmt: skip
    """The RBAC filters for one chain kind; `actions` are those with a policy on the
    workload (an ALLOW policy without any usable rule still gets its allow-nothing filter)."""
    present = set(actions)
    filters = []
    for action in ACTION_ORDER:
        if action not in present:
            continue
        policies = {r.name: r.envoy for r in rules if r.action == action and r.envoy is not None}
        config: dict[str, Any] = {"rules": {"action": _ENVOY_ACTION[action],
                                            "policies": policies}}  # fmt: skip
        if tcp:
            config["stat_prefix"] = f"{stat_prefix or 'inbound'}."
            filters.append({"name": "envoy.filters.network.rbac",
                            "typed_config": typed("envoy.extensions.filters.network.rbac.v3.RBAC",
                                                  **config)})  # fmt: skip
        else:
            filters.append({"name": "envoy.filters.http.rbac",
                            "typed_config": typed("envoy.extensions.filters.http.rbac.v3.RBAC",
                                                  **config)})  # fmt: skip
    return filters


def actions_of(policies: Iterable[Resource[AuthorizationPolicy]]) -> set[str]:
    """Which filters a workload needs: an action counts once some policy has it; a DENY or
    AUDIT policy without rules does nothing (Istio refuses a rule-less DENY anyway)."""
    found: set[str] = set()
    for policy in policies:
        action = "DENY" if policy.spec.action == "CUSTOM" else policy.spec.action
        if action == "ALLOW" or policy.spec.rules:
            found.add(action)
    return found


# --- one rule --------------------------------------------------------------------------------


def _rule(rule: Rule, context: RuleContext) -> dict[str, Any]:
    permissions = [_any_of([_operation(op, context) for op in _operations(rule)], "rules")]
    principals = [_any_of([_source(source, context) for source in _sources(rule)], "ids")]
    for condition in rule.when or ():
        permission, principal = condition_match(condition, context)
        permissions += [permission] if permission is not None else []
        principals += [principal] if principal is not None else []
    return {"permissions": [_all_of(permissions, "and_rules")],
            "principals": [_all_of(principals, "and_ids")]}  # fmt: skip


def _operations(rule: Rule) -> list[Operation]:
    return [entry.operation for entry in rule.to or () if entry.operation is not None]


def _sources(rule: Rule) -> list[Source]:
    return [entry.source for entry in rule.from_ or () if entry.source is not None]


def _any_of(items: list[dict[str, Any] | None], kind: str) -> dict[str, Any]:
    """OR of alternatives (`kind` is "ids" or "rules"); a None item means "anything", and so
    does an empty list (no `from`, no `to`)."""
    real = [item for item in items if item is not None]
    if not items or len(real) < len(items):
        return dict(ANY)
    return real[0] if len(real) == 1 else {f"or_{kind}": {kind: real}}


def _all_of(items: list[dict[str, Any]], key: str) -> dict[str, Any]:
    real = [item for item in items if item != ANY]
    if not real:
        return dict(ANY)
    if len(real) == 1:
        return real[0]
    return {key: {"rules" if key == "and_rules" else "ids": real}}


def _source(source: Source, context: RuleContext) -> dict[str, Any] | None:
    matchers: dict[str, Callable[[str], dict[str, Any]]] = {
        "principals": principal, "namespaces": namespace_principal,
        "service_accounts": context.service_account,
        "ip_blocks": lambda v: {"direct_remote_ip": cidr(v)},
        "remote_ip_blocks": lambda v: {"remote_ip": cidr(v)},
        "request_principals": request_principal,
    }  # fmt: skip
    parts = []
    for name, (yaml_name, http_only) in SOURCE_FIELDS.items():
        values = getattr(source, name)
        if not values or (http_only and context.http_only(f"from.source.{yaml_name}")):
            continue
        if name.endswith("request_principals"):
            context.not_on_grpc(f"from.source.{yaml_name}", NO_JWT)
        negated = name.startswith("not_")
        part = field_match(values, negated, matchers[name.removeprefix("not_")], "ids")
        if part is not None:
            parts.append(part)
    return _all_of(parts, "and_ids") if parts else None


def _operation(operation: Operation, context: RuleContext) -> dict[str, Any] | None:
    matchers: dict[str, Callable[[str], dict[str, Any]]] = {
        "hosts": host, "ports": lambda v: {"destination_port": int(v)},
        "methods": lambda v: {"header": {"name": ":method", "string_match": {"exact": v}}},
        "paths": url_path,
    }  # fmt: skip
    parts = []
    for name, (yaml_name, http_only) in OPERATION_FIELDS.items():
        values = getattr(operation, name)
        if not values or (http_only and context.http_only(f"to.operation.{yaml_name}")):
            continue
        part = field_match(values, name.startswith("not_"), matchers[name.removeprefix("not_")],
                      "rules")  # fmt: skip
        if part is not None:
            parts.append(part)
    return _all_of(parts, "and_rules") if parts else None
