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
"""

# mypy: disable-error-code="import-untyped"

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from envoy.extensions.filters.http.rbac.v3 import rbac_pb2  # noqa: F401  (registers the type)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2  # noqa: F401

from sidemesh.api.networking import Resource
from sidemesh.api.security.authorization_policy import (
    OPERATION_FIELDS,
    SOURCE_FIELDS,
    AuthorizationPolicy,
    Condition,
    Operation,
    Rule,
    Source,
)
from sidemesh.xds.envoy_json import typed

JWT_FILTER = "envoy.filters.http.jwt_authn"
JWT_PAYLOAD = "payload"  # jwt_authn `payload_in_metadata`: the verified token's claims
ANY: Mapping[str, Any] = {"any": True}
# Envoy's order of our filters; AUDIT first so that a denied request is still marked.
ACTION_ORDER = ("AUDIT", "DENY", "ALLOW")
_ENVOY_ACTION = {"AUDIT": "LOG", "DENY": "DENY", "ALLOW": "ALLOW"}


class Untranslatable(Exception):
    """A rule (or part of one) Envoy cannot be told; str() says why."""


class _HttpOnly(Exception):
    """A condition a TCP connection cannot have (request, JWT, HTTP headers)."""


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
            context = _Context(
                tcp=tcp, strict=action != "DENY", namespace=policy.namespace, grpc=grpc
            )
            try:
                envoy = _rule(rule, context)
                if context.dropped:
                    dropped = ", ".join(dict.fromkeys(context.dropped))
                    stricter = f"{dropped} need HTTP and are left out on TCP: it denies more"
                    note = f"{note}; {stricter}" if note else stricter
            except (_HttpOnly, Untranslatable) as exc:
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


def _rule(rule: Rule, context: _Context) -> dict[str, Any]:
    permissions = [_any_of([_operation(op, context) for op in _operations(rule)], "rules")]
    principals = [_any_of([_source(source, context) for source in _sources(rule)], "ids")]
    for condition in rule.when or ():
        permission, principal = _condition(condition, context)
        permissions += [permission] if permission is not None else []
        principals += [principal] if principal is not None else []
    return {"permissions": [_all_of(permissions, "and_rules")],
            "principals": [_all_of(principals, "and_ids")]}  # fmt: skip


def _operations(rule: Rule) -> list[Operation]:
    return [entry.operation for entry in rule.to or () if entry.operation is not None]


def _sources(rule: Rule) -> list[Source]:
    return [entry.source for entry in rule.from_ or () if entry.source is not None]


@dataclass(frozen=True)
class _Context:
    """`strict` (ALLOW/AUDIT): an HTTP-only condition on TCP raises; else it is left out."""

    tcp: bool
    strict: bool
    namespace: str  # the policy's: a bare service account name is one of its namespace
    dropped: list[str] = field(default_factory=list)  # HTTP-only conditions left out
    grpc: bool = False  # a proxyless gRPC server evaluates the filter (gRFC A41)

    def not_on_grpc(self, what: str, why: str) -> None:
        """Raises for a proxyless gRPC server, which cannot evaluate `what`."""
        if self.grpc:
            raise Untranslatable(f"{what} {why} on a proxyless gRPC server")

    def service_account(self, value: str) -> dict[str, Any]:
        namespace, _, account = value.rpartition("/")
        return _regex_principal(f"spiffe://[^/]+/ns/{re.escape(namespace or self.namespace)}"
                                f"/sa/{re.escape(account)}")  # fmt: skip

    def http_only(self, what: str) -> bool:
        """True: leave the condition out (a DENY rule on TCP); raises for ALLOW on TCP."""
        if not self.tcp:
            return False
        if self.strict:
            raise _HttpOnly(f"{what} needs HTTP; the rule allows nothing on TCP")
        self.dropped.append(what)
        return True


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


def _field(values: list[str] | None, negated: bool, matcher: Callable[[str], dict[str, Any]],
           kind: str) -> dict[str, Any] | None:  # fmt: skip
    """One field: any of its values (`kind` is "ids" or "rules"); negated: none of them."""
    if not values:
        return None
    alternatives = [matcher(value) for value in values]
    either = alternatives[0] if len(alternatives) == 1 else {
        f"or_{kind}": {kind: alternatives}
    }  # fmt: skip
    return {"not_id" if kind == "ids" else "not_rule": either} if negated else either


def _source(source: Source, context: _Context) -> dict[str, Any] | None:
    matchers: dict[str, Callable[[str], dict[str, Any]]] = {
        "principals": _principal, "namespaces": _namespace,
        "service_accounts": context.service_account,
        "ip_blocks": lambda v: {"direct_remote_ip": _cidr(v)},
        "remote_ip_blocks": lambda v: {"remote_ip": _cidr(v)},
        "request_principals": _request_principal,
    }  # fmt: skip
    parts = []
    for name, (yaml_name, http_only) in SOURCE_FIELDS.items():
        values = getattr(source, name)
        if not values or (http_only and context.http_only(f"from.source.{yaml_name}")):
            continue
        if name.endswith("request_principals"):
            context.not_on_grpc(f"from.source.{yaml_name}", _NO_JWT)
        negated = name.startswith("not_")
        part = _field(values, negated, matchers[name.removeprefix("not_")], "ids")
        if part is not None:
            parts.append(part)
    return _all_of(parts, "and_ids") if parts else None


def _operation(operation: Operation, context: _Context) -> dict[str, Any] | None:
    matchers: dict[str, Callable[[str], dict[str, Any]]] = {
        "hosts": _host, "ports": lambda v: {"destination_port": int(v)},
        "methods": lambda v: {"header": {"name": ":method", "string_match": {"exact": v}}},
        "paths": _path,
    }  # fmt: skip
    parts = []
    for name, (yaml_name, http_only) in OPERATION_FIELDS.items():
        values = getattr(operation, name)
        if not values or (http_only and context.http_only(f"to.operation.{yaml_name}")):
            continue
        part = _field(values, name.startswith("not_"), matchers[name.removeprefix("not_")],
                      "rules")  # fmt: skip
        if part is not None:
            parts.append(part)
    return _all_of(parts, "and_rules") if parts else None


# --- conditions --------------------------------------------------------------------------------

_CLAIM_PATH = re.compile(r"\[([^\[\]]+)\]")
_NO_JWT = "needs a verified JWT, which cannot be checked"
# gRFC A41: a `grpc-*` or `:scheme` header matcher is refused (the listener NACKed); hop-by-hop
# headers never match. Either would change what a rule means, so such a rule is untranslatable.
_GRPC_HIDDEN_HEADERS = frozenset({":scheme", "te", "connection", "keep-alive",
                                  "proxy-connection", "transfer-encoding", "upgrade"})  # fmt: skip


def _condition(
    condition: Condition, context: _Context
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(permission, principal) for one `when` entry; one of them is None."""
    key = condition.key
    permission_keys: dict[str, Callable[[str], dict[str, Any]]] = {
        "destination.ip": lambda v: {"destination_ip": _cidr(v)},
        "destination.port": lambda v: {"destination_port": int(v)},
        "connection.sni": lambda v: {"requested_server_name": _string_match(v)},
    }  # fmt: skip
    if key in permission_keys:
        if key == "connection.sni":
            context.not_on_grpc(key, "cannot be matched (gRPC sees no SNI)")
        return _negatable(condition, permission_keys[key], "rules"), None
    principal_keys: dict[str, Callable[[str], dict[str, Any]]] = {
        "source.ip": lambda v: {"direct_remote_ip": _cidr(v)},
        "remote.ip": lambda v: {"remote_ip": _cidr(v)},
        "source.namespace": _namespace, "source.principal": _principal,
        "source.serviceAccount": context.service_account,
    }  # fmt: skip
    if key in principal_keys:
        return None, _negatable(condition, principal_keys[key], "ids")
    http: dict[str, Callable[[str], dict[str, Any]]] = {
        "request.auth.principal": _request_principal,
        "request.auth.audiences": lambda v: _claim(["aud"], v),
        "request.auth.presenter": lambda v: _claim(["azp"], v),
    }
    if key.startswith("request.headers["):
        name = key[len("request.headers[") : -1]
        if name.lower().startswith("grpc-") or name.lower() in _GRPC_HIDDEN_HEADERS:
            context.not_on_grpc(f"when key {key}", "cannot be matched (gRPC refuses or hides it)")
        http[key] = lambda v: {"header": {"name": name, "string_match": _string_match(v)}}
    elif key.startswith("request.auth.claims["):
        path = _CLAIM_PATH.findall(key[len("request.auth.claims") :])
        http[key] = lambda v: _claim(path, v)
    if key in http:
        if context.http_only(f"when key {key}"):
            return None, None
        if key.startswith("request.auth."):
            context.not_on_grpc(f"when key {key}", _NO_JWT)
        return None, _negatable(condition, http[key], "ids")
    raise Untranslatable(f"condition key {key!r} is not supported by sidemesh")


def _negatable(
    condition: Condition, matcher: Callable[[str], dict[str, Any]], kind: str
) -> dict[str, Any] | None:
    parts = [
        part
        for part in (
            _field(condition.values, False, matcher, kind),
            _field(condition.not_values, True, matcher, kind),
        )
        if part
    ]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {f"and_{kind}": {kind: parts}}


# --- matchers ------------------------------------------------------------------------------------


def _string_match(value: str, *, prefix: str = "", ignore_case: bool = False) -> dict[str, Any]:
    """Istio's value forms: `*` (present), `abc*` (prefix), `*abc` (suffix), else exact."""
    match: dict[str, Any]
    if value == "*":
        match = {"safe_regex": {"regex": ".+"}} if not prefix else {"prefix": prefix}
    elif value.endswith("*"):
        match = {"prefix": prefix + value[:-1]}
    elif value.startswith("*"):
        match = {"suffix": value[1:]}
    else:
        match = {"exact": prefix + value}
    if ignore_case:
        match["ignore_case"] = True
    return match


def _principal(value: str) -> dict[str, Any]:
    # Peer identities are SPIFFE URIs; Istio's principals are written without the scheme.
    return {"authenticated": {"principal_name": _string_match(value, prefix="spiffe://")}}


def _regex_principal(pattern: str) -> dict[str, Any]:
    return {"authenticated": {"principal_name": {"safe_regex": {"regex": pattern}}}}


def _segment(value: str) -> str:
    """One path segment of a SPIFFE id, with Istio's `*`, prefix and suffix forms."""
    if value == "*":
        return "[^/]+"
    if value.endswith("*"):
        return re.escape(value[:-1]) + "[^/]*"
    if value.startswith("*"):
        return "[^/]*" + re.escape(value[1:])
    return re.escape(value)


def _namespace(value: str) -> dict[str, Any]:
    return _regex_principal(f"spiffe://[^/]+/ns/{_segment(value)}/.*")


def _cidr(value: str) -> dict[str, Any]:
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise Untranslatable(f"{value!r} is not an IP address or CIDR block") from None
    return {"address_prefix": str(network.network_address), "prefix_len": network.prefixlen}


def _host(value: str) -> dict[str, Any]:
    """The Host/:authority, case-insensitive, with or without a port."""
    exact = _authority(_string_match(value, ignore_case=True))
    if value.startswith("*") or value.endswith("*"):
        return exact
    with_port = _authority({"prefix": f"{value}:", "ignore_case": True})
    return {"or_rules": {"rules": [exact, with_port]}}


def _authority(match: dict[str, Any]) -> dict[str, Any]:
    return {"header": {"name": ":authority", "string_match": match}}


def _path(value: str) -> dict[str, Any]:
    if "{" in value:  # Istio's path templates: {*} one segment, {**} the rest
        # As a regex, not Envoy's uri_template permission: Envoy 1.40 aborts on that one in
        # RBAC (seen with `envoy --mode validate`), and a regex says the same thing.
        parts = [{"{*}": "[^/]+", "{**}": ".*"}.get(part, re.escape(part))
                 for part in re.split(r"(\{\*\*?\})", value)]  # fmt: skip
        return {"url_path": {"path": {"safe_regex": {"regex": "".join(parts)}}}}
    if value == "*":
        return {"url_path": {"path": {"safe_regex": {"regex": ".*"}}}}
    return {"url_path": {"path": _string_match(value)}}


def _payload(path: Sequence[str], value: dict[str, Any]) -> dict[str, Any]:
    keys = [{"key": JWT_PAYLOAD}, *({"key": key} for key in path)]
    return {"metadata": {"filter": JWT_FILTER, "path": keys, "value": value}}


def _claim(path: Sequence[str], value: str) -> dict[str, Any]:
    """A claim that is a string equal to `value` or a list containing it (`aud`, `groups`)."""
    match = _string_match(value)
    return {"or_ids": {"ids": [
        _payload(path, {"string_match": match}),
        _payload(path, {"list_match": {"one_of": {"string_match": match}}}),
    ]}}  # fmt: skip


def _request_principal(value: str) -> dict[str, Any]:
    """Istio's request principal is `<iss>/<sub>` of the verified token. Envoy holds the two
    claims apart and an issuer may itself contain `/`, so every split point of the written
    value is an alternative: exactly the tokens whose `iss + "/" + sub` matches."""
    if value == "*":
        return _payload(["iss"], {"string_match": {"safe_regex": {"regex": ".+"}}})

    def claim(name: str, how: str, text: str) -> dict[str, Any]:
        return _payload([name], {"string_match": {how: text}})

    def both(issuer: dict[str, Any], subject: dict[str, Any]) -> dict[str, Any]:
        return {"and_ids": {"ids": [issuer, subject]}}

    alternatives: list[dict[str, Any]] = []
    if value.endswith("*"):  # prefix: iss starts with it, or iss is a head and sub continues
        text = value[:-1]
        alternatives.append(claim("iss", "prefix", text))
        for i in _slashes(text):
            alternatives.append(both(claim("iss", "exact", text[:i]),
                                     claim("sub", "prefix", text[i + 1 :])))  # fmt: skip
    elif value.startswith("*"):  # suffix: sub ends with it, or sub is a tail and iss ends
        text = value[1:]
        alternatives.append(claim("sub", "suffix", text))
        for i in _slashes(text):
            alternatives.append(both(claim("iss", "suffix", text[:i]),
                                     claim("sub", "exact", text[i + 1 :])))  # fmt: skip
    else:
        for i in _slashes(value):
            alternatives.append(both(claim("iss", "exact", value[:i]),
                                     claim("sub", "exact", value[i + 1 :])))  # fmt: skip
    if not alternatives:  # no "/" at all: no token's principal can be this
        return {"not_id": dict(ANY)}
    return alternatives[0] if len(alternatives) == 1 else {"or_ids": {"ids": alternatives}}


def _slashes(text: str) -> list[int]:
    return [index for index, char in enumerate(text) if char == "/"]
