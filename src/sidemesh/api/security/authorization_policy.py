"""`security.istio.io` AuthorizationPolicy: the typed model and the checks Istio's validation
applies beyond field types (each issue names its field path).

Semantics the generator relies on (Istio's): a rule matches when all of its `from`, `to` and
`when` match; each is a list whose entries are alternatives (OR); inside one source or
operation every set field must match (AND), inside one field any value may match (OR), and a
`not…` field must match none of its values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Literal

from pydantic import Field

from sidemesh.api.networking.common import Issues, Model, is_ip_or_cidr

Action = Literal["ALLOW", "DENY", "AUDIT", "CUSTOM"]

# Condition keys Istio accepts in `when` (bracketed ones take a name).
PLAIN_KEYS = frozenset({
    "source.ip", "remote.ip", "source.namespace", "source.principal", "source.serviceAccount",
    "request.auth.principal", "request.auth.audiences", "request.auth.presenter",
    "destination.ip", "destination.port", "connection.sni",
})  # fmt: skip
_BRACKETED = re.compile(r"^(request\.headers|request\.auth\.claims)((\[[^\[\]]+\])+)$")
IP_KEYS = frozenset({"source.ip", "remote.ip", "destination.ip"})
# `namespace/name`, or `name` alone: a service account of the policy's own namespace.
_SERVICE_ACCOUNT = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?/)?[a-z0-9]([-.a-z0-9]*[a-z0-9])?$")


class MatchLabels(Model):
    match_labels: dict[str, str] = Field(default_factory=dict, alias="matchLabels")


class TargetRef(Model):
    group: str = ""
    kind: str
    name: str
    namespace: str = ""


class Provider(Model):
    name: str = ""


class Source(Model):
    principals: list[str] | None = None
    not_principals: list[str] | None = Field(None, alias="notPrincipals")
    request_principals: list[str] | None = Field(None, alias="requestPrincipals")
    not_request_principals: list[str] | None = Field(None, alias="notRequestPrincipals")
    namespaces: list[str] | None = None
    not_namespaces: list[str] | None = Field(None, alias="notNamespaces")
    service_accounts: list[str] | None = Field(None, alias="serviceAccounts")
    not_service_accounts: list[str] | None = Field(None, alias="notServiceAccounts")
    ip_blocks: list[str] | None = Field(None, alias="ipBlocks")
    not_ip_blocks: list[str] | None = Field(None, alias="notIpBlocks")
    remote_ip_blocks: list[str] | None = Field(None, alias="remoteIpBlocks")
    not_remote_ip_blocks: list[str] | None = Field(None, alias="notRemoteIpBlocks")


class From(Model):
    source: Source | None = None


class Operation(Model):
    hosts: list[str] | None = None
    not_hosts: list[str] | None = Field(None, alias="notHosts")
    ports: list[str] | None = None
    not_ports: list[str] | None = Field(None, alias="notPorts")
    methods: list[str] | None = None
    not_methods: list[str] | None = Field(None, alias="notMethods")
    paths: list[str] | None = None
    not_paths: list[str] | None = Field(None, alias="notPaths")


class To(Model):
    operation: Operation | None = None


class Condition(Model):
    key: str = ""
    values: list[str] | None = None
    not_values: list[str] | None = Field(None, alias="notValues")


class Rule(Model):
    from_: list[From] | None = Field(None, alias="from")
    to: list[To] | None = None
    when: list[Condition] | None = None


class AuthorizationPolicy(Model):
    selector: MatchLabels | None = None
    target_ref: TargetRef | None = Field(None, alias="targetRef")
    target_refs: list[TargetRef] | None = Field(None, alias="targetRefs")
    action: Action = "ALLOW"
    provider: Provider | None = None
    rules: list[Rule] | None = None


# Fields by the protocol they need: a TCP connection has none of the HTTP ones.
SOURCE_FIELDS = {  # python name → (YAML name, HTTP only)
    "principals": ("principals", False), "not_principals": ("notPrincipals", False),
    "request_principals": ("requestPrincipals", True),
    "not_request_principals": ("notRequestPrincipals", True),
    "namespaces": ("namespaces", False), "not_namespaces": ("notNamespaces", False),
    "service_accounts": ("serviceAccounts", False),
    "not_service_accounts": ("notServiceAccounts", False),
    "ip_blocks": ("ipBlocks", False), "not_ip_blocks": ("notIpBlocks", False),
    "remote_ip_blocks": ("remoteIpBlocks", False),
    "not_remote_ip_blocks": ("notRemoteIpBlocks", False),
}  # fmt: skip
OPERATION_FIELDS = {
    "hosts": ("hosts", True), "not_hosts": ("notHosts", True),
    "ports": ("ports", False), "not_ports": ("notPorts", False),
    "methods": ("methods", True), "not_methods": ("notMethods", True),
    "paths": ("paths", True), "not_paths": ("notPaths", True),
}  # fmt: skip


def condition_key_error(key: str) -> str | None:
    if key in PLAIN_KEYS or key.startswith("experimental.envoy.filters."):
        return None
    if _BRACKETED.match(key):
        return None
    return f"unknown attribute {key!r}"


def check_condition_values(key: str, values: Iterable[str]) -> str | None:
    for value in values:
        if key in IP_KEYS and not is_ip_or_cidr(value):
            return f"{value!r} is not an IP address or CIDR block"
        if key == "destination.port" and not _is_port(value):
            return f"{value!r} is not a port number 1-65535"
    return None


def _is_port(value: str) -> bool:
    return value.isdigit() and 1 <= int(value) <= 65535


def path_template_error(path: str) -> str | None:
    """Istio's `{*}` (one segment) and `{**}` (any number of segments) path templates."""
    if "{" not in path and "}" not in path:
        return None
    for segment in path.split("/"):
        if ("{" in segment or "}" in segment) and segment not in ("{*}", "{**}"):
            return f"{path!r}: a path template segment must be exactly {{*}} or {{**}}"
    if "*" in path.replace("{*}", "").replace("{**}", ""):
        return f"{path!r}: a path template cannot also use * prefix/suffix matching"
    return None


def check_authorization_policy(spec: AuthorizationPolicy, issues: Issues) -> None:
    check_attachment(spec.selector, spec.target_ref, spec.target_refs, issues)
    if spec.action == "CUSTOM":
        if spec.rules is None:
            issues.add("spec.rules", "CUSTOM action without rules is never triggered; add an "
                       "empty rule {} to apply it to every request")  # fmt: skip
        elif spec.provider is None or not spec.provider.name:
            issues.add("spec.provider.name", "must not be empty with action CUSTOM")
    elif spec.provider is not None:
        issues.add("spec.provider", f"is only allowed with action CUSTOM, not {spec.action}")
    if spec.action == "DENY" and spec.rules is None:
        issues.add("spec.rules", "DENY action without rules is never triggered; add an empty "
                   "rule {} to deny every request")  # fmt: skip
    for index, rule in enumerate(spec.rules or ()):
        _check_rule(rule, f"spec.rules[{index}]", spec.action, issues)


def check_attachment(
    selector: MatchLabels | None,
    target_ref: TargetRef | None,
    target_refs: list[TargetRef] | None,
    issues: Issues,
) -> None:
    """selector, targetRef and targetRefs are alternatives (Istio's rule for both kinds)."""
    if sum((selector is not None, target_ref is not None, bool(target_refs))) > 1:
        issues.add("spec", "only one of targetRefs or selector can be set")
    if selector is not None:
        for key, value in selector.match_labels.items():
            if not key:
                issues.add("spec.selector.matchLabels", "empty key is not supported")
            if "*" in key or "*" in value:
                issues.add(f"spec.selector.matchLabels.{key}", "wildcard is not supported")
    refs = [("spec.targetRef", target_ref)] if target_ref is not None else []
    refs += [(f"spec.targetRefs[{i}]", ref) for i, ref in enumerate(target_refs or ())]
    for path, ref in refs:
        if not ref.name:
            issues.add(f"{path}.name", "is required")
        if not ref.kind:
            issues.add(f"{path}.kind", "is required")
        if ref.namespace:
            issues.add(f"{path}.namespace", "cross namespace referencing is not supported")


def _check_rule(rule: Rule, path: str, action: str, issues: Issues) -> None:
    _check_list(rule.from_, f"{path}.from", issues)
    for index, entry in enumerate(rule.from_ or ()):
        where = f"{path}.from[{index}].source"
        if entry.source is None:
            issues.add(where, "must not be nil")
        else:
            _check_source(entry.source, where, action, issues)
    _check_list(rule.to, f"{path}.to", issues)
    for index, target in enumerate(rule.to or ()):
        where = f"{path}.to[{index}].operation"
        if target.operation is None:
            issues.add(where, "must not be nil")
        else:
            _check_operation(target.operation, where, issues)
    for index, condition in enumerate(rule.when or ()):
        _check_condition(condition, f"{path}.when[{index}]", action, issues)


def _check_list(entries: list[Any] | None, path: str, issues: Issues) -> None:
    if entries is not None and not entries:
        issues.add(path, "must not be empty")


def _check_source(source: Source, where: str, action: str, issues: Issues) -> None:
    _check_fields(source, SOURCE_FIELDS, where, issues)
    if (source.service_accounts or source.not_service_accounts) and (
        source.principals or source.not_principals or source.namespaces or source.not_namespaces
    ):
        issues.add(where, "cannot set serviceAccounts with namespaces or principals")
    ips = ("ip_blocks", "not_ip_blocks", "remote_ip_blocks", "not_remote_ip_blocks")
    _check_each(source, ips, SOURCE_FIELDS, where, issues, _ip_error)
    accounts = ("service_accounts", "not_service_accounts")
    _check_each(source, accounts, SOURCE_FIELDS, where, issues, _service_account_error)
    if action == "CUSTOM":
        for name in ("principals", "not_principals", "request_principals",
                     "not_request_principals", "namespaces", "not_namespaces"):  # fmt: skip
            if getattr(source, name):
                issues.add(
                    f"{where}.{SOURCE_FIELDS[name][0]}", "is not supported with action CUSTOM"
                )


def _port_error(value: str) -> str | None:
    return None if _is_port(value) else f"{value!r} is not a port number 1-65535"


def _ip_error(value: str) -> str | None:
    return None if is_ip_or_cidr(value) else f"{value!r} is not an IP address or CIDR block"


def _service_account_error(value: str) -> str | None:
    if _SERVICE_ACCOUNT.match(value):
        return None
    return f"{value!r} must be [<namespace>/]<service account>"


def _check_operation(operation: Operation, where: str, issues: Issues) -> None:
    _check_fields(operation, OPERATION_FIELDS, where, issues)
    ports, paths = ("ports", "not_ports"), ("paths", "not_paths")
    _check_each(operation, ports, OPERATION_FIELDS, where, issues, _port_error)
    _check_each(operation, paths, OPERATION_FIELDS, where, issues, path_template_error)


def _check_condition(condition: Condition, where: str, action: str, issues: Issues) -> None:
    if not condition.key:
        issues.add(f"{where}.key", "must not be empty")
        return
    problem = condition_key_error(condition.key)
    if problem:
        issues.add(f"{where}.key", problem)
        return
    if not condition.values and not condition.not_values:
        issues.add(where, f"at least one of values or notValues must be set for key "
                   f"{condition.key}")  # fmt: skip
    for name, values in (("values", condition.values), ("notValues", condition.not_values)):
        if any(not value for value in values or ()):
            issues.add(f"{where}.{name}", "empty value not allowed")
        problem = check_condition_values(condition.key, values or ())
        if problem:
            issues.add(f"{where}.{name}", problem)
    if action == "CUSTOM" and (
        condition.key in ("source.namespace", "source.serviceAccount", "source.principal")
        or condition.key.startswith("request.auth.")
    ):
        issues.add(f"{where}.key", f"{condition.key} is not supported with action CUSTOM")


def _check_fields(
    model: Source | Operation, fields: dict[str, tuple[str, bool]], where: str, issues: Issues
) -> None:
    """No empty value in any field, and at least one field set."""
    for name, (yaml_name, _) in fields.items():
        if any(not value for value in getattr(model, name) or ()):
            issues.add(f"{where}.{yaml_name}", "empty value not allowed")
    if not any(getattr(model, name) for name in fields):
        issues.add(where, "must not be empty")


def _check_each(
    model: Source | Operation,
    names: Iterable[str],
    fields: dict[str, tuple[str, bool]],
    where: str,
    issues: Issues,
    problem_of: Callable[[str], str | None],
) -> None:
    for name in names:
        for value in getattr(model, name) or ():
            problem = problem_of(value) if value else None
            if problem:
                issues.add(f"{where}.{fields[name][0]}", problem)
