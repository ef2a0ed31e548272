"""A small evaluator of the Envoy RBAC JSON sidemesh generates, for truth tables: what Envoy
would decide for a request, written from Envoy's RBAC reference (principals, permissions,
string and metadata matchers). Only the matcher kinds sidemesh emits are known; any other
raises, so a new kind cannot pass unnoticed."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Request:
    principal: str | None = None  # the peer certificate's URI SAN (mTLS), None in plaintext
    source_ip: str = "10.0.0.1"
    remote_ip: str = "10.0.0.1"
    destination_ip: str = "10.0.0.9"
    port: int = 8080
    method: str = "GET"
    path: str = "/"
    host: str = "web"
    headers: dict[str, str] = field(default_factory=dict)
    sni: str = ""
    jwt: dict[str, Any] | None = None  # the verified payload, as jwt_authn puts it in metadata

    def header(self, name: str) -> str | None:
        special = {":method": self.method, ":authority": self.host, ":path": self.path}
        return special.get(name, self.headers.get(name.lower()))


def string_matches(matcher: dict[str, Any], value: str | None) -> bool:
    if value is None:
        return False
    if matcher.get("ignore_case"):
        matcher = {k: v.lower() if isinstance(v, str) else v for k, v in matcher.items()}
        value = value.lower()
    if "exact" in matcher:
        return value == matcher["exact"]
    if "prefix" in matcher:
        return value.startswith(matcher["prefix"])
    if "suffix" in matcher:
        return value.endswith(matcher["suffix"])
    if "safe_regex" in matcher:
        return re.fullmatch(matcher["safe_regex"]["regex"], value) is not None
    raise ValueError(f"unknown string matcher {matcher}")


def _in_cidr(cidr: dict[str, Any], address: str) -> bool:
    network = ipaddress.ip_network(f"{cidr['address_prefix']}/{cidr['prefix_len']}")
    return ipaddress.ip_address(address) in network


def _metadata(matcher: dict[str, Any], request: Request) -> bool:
    assert matcher["filter"] == "envoy.filters.http.jwt_authn", matcher
    value: Any = {"payload": request.jwt} if request.jwt is not None else {}
    for step in matcher["path"]:
        if not isinstance(value, dict) or step["key"] not in value:
            return False
        value = value[step["key"]]
    expected = matcher["value"]
    if "string_match" in expected:
        return isinstance(value, str) and string_matches(expected["string_match"], value)
    if "list_match" in expected:
        inner = expected["list_match"]["one_of"]["string_match"]
        return isinstance(value, list) and any(
            isinstance(item, str) and string_matches(inner, item) for item in value
        )
    raise ValueError(f"unknown metadata value matcher {expected}")


def principal_matches(rule: dict[str, Any], request: Request) -> bool:
    ((kind, body),) = rule.items()
    if kind == "any":
        return True
    if kind == "and_ids":
        return all(principal_matches(r, request) for r in body["ids"])
    if kind == "or_ids":
        return any(principal_matches(r, request) for r in body["ids"])
    if kind == "not_id":
        return not principal_matches(body, request)
    if kind == "authenticated":
        return request.principal is not None and string_matches(
            body["principal_name"], request.principal
        )
    if kind == "direct_remote_ip":
        return _in_cidr(body, request.source_ip)
    if kind == "remote_ip":
        return _in_cidr(body, request.remote_ip)
    if kind == "header":
        return string_matches(body["string_match"], request.header(body["name"]))
    if kind == "metadata":
        return _metadata(body, request)
    raise ValueError(f"unknown principal {rule}")


def permission_matches(rule: dict[str, Any], request: Request) -> bool:
    ((kind, body),) = rule.items()
    if kind == "any":
        return True
    if kind == "and_rules":
        return all(permission_matches(r, request) for r in body["rules"])
    if kind == "or_rules":
        return any(permission_matches(r, request) for r in body["rules"])
    if kind == "not_rule":
        return not permission_matches(body, request)
    if kind == "header":
        return string_matches(body["string_match"], request.header(body["name"]))
    if kind == "url_path":
        return string_matches(body["path"], request.path.partition("?")[0])
    if kind == "destination_port":
        return request.port == body
    if kind == "destination_ip":
        return _in_cidr(body, request.destination_ip)
    if kind == "requested_server_name":
        return string_matches(body, request.sni)
    raise ValueError(f"unknown permission {rule}")


def decide(filters: list[dict[str, Any]], request: Request) -> str:
    """ "allow" or "deny": Envoy's RBAC filters in order (LOG never refuses)."""
    for item in filters:
        if not item["name"].endswith(".rbac"):
            continue
        rules = item["typed_config"]["rules"]
        matched = any(
            any(permission_matches(p, request) for p in policy["permissions"])
            and any(principal_matches(p, request) for p in policy["principals"])
            for policy in (rules.get("policies") or {}).values()
        )
        if (rules["action"] == "DENY" and matched) or (rules["action"] == "ALLOW" and not matched):
            return "deny"
    return "allow"
