"""What one AuthorizationPolicy rule's `when` conditions become in Envoy RBAC, for the chain
it is translated for (`RuleContext`: HTTP or TCP, strict or not, proxyless gRPC or Envoy):
a permission (what the request is for) or a principal (who sends it). Pure."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sidemesh.api.security.authorization_policy import Condition
from sidemesh.xds.rbac_matchers import (
    Untranslatable,
    cidr,
    claim,
    field_match,
    namespace_principal,
    principal,
    regex_principal,
    request_principal,
    string_match,
)


class HttpOnly(Exception):
    """A condition a TCP connection cannot have (request, JWT, HTTP headers)."""


@dataclass(frozen=True)
class RuleContext:
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
        return regex_principal(f"spiffe://[^/]+/ns/{re.escape(namespace or self.namespace)}"
                               f"/sa/{re.escape(account)}")  # fmt: skip

    def http_only(self, what: str) -> bool:
        """True: leave the condition out (a DENY rule on TCP); raises for ALLOW on TCP."""
        if not self.tcp:
            return False
        if self.strict:
            raise HttpOnly(f"{what} needs HTTP; the rule allows nothing on TCP")
        self.dropped.append(what)
        return True


_CLAIM_PATH = re.compile(r"\[([^\[\]]+)\]")
NO_JWT = "needs a verified JWT, which cannot be checked"
# gRFC A41: a `grpc-*` or `:scheme` header matcher is refused (the listener NACKed); hop-by-hop
# headers never match. Either would change what a rule means, so such a rule is untranslatable.
_GRPC_HIDDEN_HEADERS = frozenset({":scheme", "te", "connection", "keep-alive",
                                  "proxy-connection", "transfer-encoding", "upgrade"})  # fmt: skip


def condition_match(
    condition: Condition, context: RuleContext
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(permission, principal) for one `when` entry; one of them is None."""
    key = condition.key
    permission_keys: dict[str, Callable[[str], dict[str, Any]]] = {
        "destination.ip": lambda v: {"destination_ip": cidr(v)},
        "destination.port": lambda v: {"destination_port": int(v)},
        "connection.sni": lambda v: {"requested_server_name": string_match(v)},
    }  # fmt: skip
    if key in permission_keys:
        if key == "connection.sni":
            context.not_on_grpc(key, "cannot be matched (gRPC sees no SNI)")
        return _negatable(condition, permission_keys[key], "rules"), None
    principal_keys: dict[str, Callable[[str], dict[str, Any]]] = {
        "source.ip": lambda v: {"direct_remote_ip": cidr(v)},
        "remote.ip": lambda v: {"remote_ip": cidr(v)},
        "source.namespace": namespace_principal, "source.principal": principal,
        "source.serviceAccount": context.service_account,
    }  # fmt: skip
    if key in principal_keys:
        return None, _negatable(condition, principal_keys[key], "ids")
    http: dict[str, Callable[[str], dict[str, Any]]] = {
        "request.auth.principal": request_principal,
        "request.auth.audiences": lambda v: claim(["aud"], v),
        "request.auth.presenter": lambda v: claim(["azp"], v),
    }
    if key.startswith("request.headers["):
        name = key[len("request.headers[") : -1]
        if name.lower().startswith("grpc-") or name.lower() in _GRPC_HIDDEN_HEADERS:
            context.not_on_grpc(f"when key {key}", "cannot be matched (gRPC refuses or hides it)")
        http[key] = lambda v: {"header": {"name": name, "string_match": string_match(v)}}
    elif key.startswith("request.auth.claims["):
        path = _CLAIM_PATH.findall(key[len("request.auth.claims") :])
        http[key] = lambda v: claim(path, v)
    if key in http:
        if context.http_only(f"when key {key}"):
            return None, None
        if key.startswith("request.auth."):
            context.not_on_grpc(f"when key {key}", NO_JWT)
        return None, _negatable(condition, http[key], "ids")
    raise Untranslatable(f"condition key {key!r} is not supported by sidemesh")


def _negatable(
    condition: Condition, matcher: Callable[[str], dict[str, Any]], kind: str
) -> dict[str, Any] | None:
    parts = [
        part
        for part in (
            field_match(condition.values, False, matcher, kind),
            field_match(condition.not_values, True, matcher, kind),
        )
        if part
    ]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {f"and_{kind}": {kind: parts}}
