"""RequestAuthentication → Envoy's `envoy.filters.http.jwt_authn` for a workload's inbound HTTP
chains. Pure: JWKS documents the control plane fetched for `jwksUri` arrive in a mapping.

Istio's semantics. Every JWT rule of every RequestAuthentication on the workload is a
provider; the one requirement is "any provider, or no token at all": a request without a
token passes (an AuthorizationPolicy can demand one with `requestPrincipals: ["*"]`), a token
that no provider verifies (forged, expired, unknown issuer or audience) is refused with 401.
The verified claims go to dynamic metadata (`payload_in_metadata`), where RBAC's
requestPrincipals and `request.auth.claims[...]` read them. A `jwksUri` whose document is not
(yet) fetched gets a key set nobody holds the private key of, so its tokens fail closed.
"""

# mypy: disable-error-code="import-untyped"

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2  # noqa: F401  (registers)

from sidemesh.api.networking import Resource
from sidemesh.api.security.request_authentication import JwtRule, RequestAuthentication
from sidemesh.xds.envoy_json import typed
from sidemesh.xds.rbac_matchers import JWT_FILTER, JWT_PAYLOAD

# An RSA public key whose private half was discarded when it was made: verifies nothing.
UNVERIFIABLE_JWKS = json.dumps({"keys": [{
    "kty": "RSA", "kid": "sidemesh-jwks-unavailable", "alg": "RS256", "use": "sig", "e": "AQAB",
    "n": "rnr77N_OwjBlJyv0E79dTyX5qgtMp7LyhUmIw2Cec_gPUO6Eoas7pDgN-6g_z3XN8DJOXXKhLsmbIPafETF"
         "rf9_NlKwWr76amslges-dpK2KFL880XaIqFf-Xt1BIqYdJVY9Nu0qsAp653i0kD7xsnWxsPYA_UpKatxWO5n"
         "1rh4qVFnxJpmsdlvWEUKbFLihj6xF-a8QzTJVvBoQ0Eagw-b6stuRtMfBqVOmBWVO2naKf2IVFNuz60DO1T"
         "Tbvj8pXhYs25NNOtp8NeLnOSBXonrrPa8c2fS7kFjUoiuh7uFhW_gPYRk8AhPVkufsH6fSOkpatvVM9o0P7"
         "ee4MXjcWQ",
}]})  # fmt: skip
# Claims Istio always splits on spaces (OAuth scopes), plus a rule's spaceDelimitedClaims.
SPACE_DELIMITED = ("scope", "permission")


@dataclass(frozen=True)
class JwtProvider:
    name: str
    issuer: str
    config: Mapping[str, Any]
    note: str = ""  # why its tokens cannot verify (JWKS not available), if so


def providers(
    policies: Iterable[Resource[RequestAuthentication]], jwks_by_uri: Mapping[str, str]
) -> list[JwtProvider]:
    found = []
    for policy in sorted(policies, key=lambda p: (p.namespace, p.name)):
        for index, rule in enumerate(policy.spec.jwt_rules or ()):
            name = f"{policy.namespace}/{policy.name}/{index}"
            jwks, note = _jwks(rule, jwks_by_uri)
            found.append(JwtProvider(name, rule.issuer, _provider(rule, jwks), note))
    return found


def jwt_authn_filter(found: list[JwtProvider]) -> dict[str, Any] | None:
    if not found:
        return None
    requirement = {"requires_any": {"requirements": [
        *({"provider_name": p.name} for p in found), {"allow_missing": {}},
    ]}}  # fmt: skip
    config = typed(
        "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        providers={p.name: dict(p.config) for p in found},
        rules=[{"match": {"prefix": "/"}, "requires": requirement}],
        bypass_cors_preflight=True,
    )
    return {"name": JWT_FILTER, "typed_config": config}


def _jwks(rule: JwtRule, jwks_by_uri: Mapping[str, str]) -> tuple[str, str]:
    if rule.jwks:
        return rule.jwks, ""
    fetched = jwks_by_uri.get(rule.jwks_uri)
    if fetched:
        return fetched, ""
    return UNVERIFIABLE_JWKS, (f"JWKS of {rule.jwks_uri or 'issuer ' + rule.issuer!r} is not "
                               "available: its tokens are refused")  # fmt: skip


def _provider(rule: JwtRule, jwks: str) -> dict[str, Any]:
    provider: dict[str, Any] = {
        "local_jwks": {"inline_string": jwks},
        "forward": rule.forward_original_token,
        "payload_in_metadata": JWT_PAYLOAD,
        "normalize_payload_in_metadata": {"space_delimited_claims": sorted(
            {*SPACE_DELIMITED, *(rule.space_delimited_claims or ())})},
    }  # fmt: skip
    if rule.issuer:
        provider["issuer"] = rule.issuer
    if rule.audiences:
        provider["audiences"] = list(rule.audiences)
    if rule.from_headers:
        provider["from_headers"] = [{"name": h.name, "value_prefix": h.prefix}
                                    for h in rule.from_headers]  # fmt: skip
    if rule.from_params:
        provider["from_params"] = list(rule.from_params)
    if rule.from_cookies:
        provider["from_cookies"] = list(rule.from_cookies)
    if rule.output_payload_to_header:
        provider["forward_payload_header"] = rule.output_payload_to_header
    if rule.output_claim_to_headers:
        provider["claim_to_headers"] = [{"header_name": c.header, "claim_name": c.claim}
                                        for c in rule.output_claim_to_headers]  # fmt: skip
    return provider
