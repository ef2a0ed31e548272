"""`security.istio.io` RequestAuthentication: JWT rules a workload checks, the typed model and
Istio's checks beyond field types (each issue names its field path)."""

from __future__ import annotations

import base64
import binascii
import json
import re
import urllib.parse
from typing import Any, Literal

from pydantic import Field

from sidemesh.api.networking.common import Duration, Issues, Model
from sidemesh.api.security.authorization_policy import MatchLabels, TargetRef, check_attachment

# A header name Envoy will set: an RFC 7230 token, not a pseudo-header (Istio's strict check).
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
MAX_JWKS_BYTES = 64 * 1024  # an inline JWKS larger than this is a mistake, not a key set


class JwtHeader(Model):
    name: str = ""
    prefix: str = ""


class ClaimToHeader(Model):
    header: str = ""
    claim: str = ""


class JwtRule(Model):
    issuer: str = ""
    audiences: list[str] | None = None
    jwks_uri: str = Field("", alias="jwksUri")
    jwks: str = ""
    from_headers: list[JwtHeader] | None = Field(None, alias="fromHeaders")
    from_params: list[str] | None = Field(None, alias="fromParams")
    from_cookies: list[str] | None = Field(None, alias="fromCookies")
    output_payload_to_header: str = Field("", alias="outputPayloadToHeader")
    forward_original_token: bool = Field(False, alias="forwardOriginalToken")
    output_claim_to_headers: list[ClaimToHeader] | None = Field(None, alias="outputClaimToHeaders")
    space_delimited_claims: list[str] | None = Field(None, alias="spaceDelimitedClaims")
    timeout: Duration | None = None
    presence: Literal["OPTIONAL", "REQUIRED"] | None = None  # sidemesh: only OPTIONAL (default)


class RequestAuthentication(Model):
    selector: MatchLabels | None = None
    target_ref: TargetRef | None = Field(None, alias="targetRef")
    target_refs: list[TargetRef] | None = Field(None, alias="targetRefs")
    jwt_rules: list[JwtRule] | None = Field(None, alias="jwtRules")


def check_request_authentication(spec: RequestAuthentication, issues: Issues) -> None:
    check_attachment(spec.selector, spec.target_ref, spec.target_refs, issues)
    for index, rule in enumerate(spec.jwt_rules or ()):
        _check_rule(rule, f"spec.jwtRules[{index}]", issues)


def _check_rule(rule: JwtRule, path: str, issues: Issues) -> None:
    if any(not audience for audience in rule.audiences or ()):
        issues.add(f"{path}.audiences", "audience must be a non-empty string")
    if not rule.issuer and not rule.jwks_uri:
        issues.add(f"{path}.issuer", "issuer or jwksUri must be a non-empty string")
    if rule.jwks_uri:
        problem = jwks_uri_error(rule.jwks_uri)
        if problem:
            issues.add(f"{path}.jwksUri", problem)
    if rule.jwks:
        problem = jwks_error(rule.jwks)
        if problem:
            issues.add(f"{path}.jwks", problem)
    for index, header in enumerate(rule.from_headers or ()):
        if not header.name:
            issues.add(f"{path}.fromHeaders[{index}].name", "is required")
    for field, values in (("fromParams", rule.from_params), ("fromCookies", rule.from_cookies),
                          ("spaceDelimitedClaims", rule.space_delimited_claims)):  # fmt: skip
        if any(not value for value in values or ()):
            issues.add(f"{path}.{field}", "empty value not allowed")
    for index, output in enumerate(rule.output_claim_to_headers or ()):
        where = f"{path}.outputClaimToHeaders[{index}]"
        if not output.claim:
            issues.add(f"{where}.claim", "is required")
        if not output.header:
            issues.add(f"{where}.header", "is required")
        elif not _HEADER_NAME.match(output.header):
            issues.add(f"{where}.header", f"{output.header!r} is not a valid HTTP header name")
    if rule.output_payload_to_header and not _HEADER_NAME.match(rule.output_payload_to_header):
        issues.add(f"{path}.outputPayloadToHeader", "is not a valid HTTP header name")
    if rule.presence == "REQUIRED":
        issues.add(f"{path}.presence", "REQUIRED is not supported by sidemesh; require a token "
                   "with an AuthorizationPolicy (requestPrincipals: [\"*\"])")  # fmt: skip


def jwks_uri_error(uri: str) -> str | None:
    parts = urllib.parse.urlsplit(uri)
    if not parts.scheme:
        return "url must have scheme"
    if parts.scheme not in ("http", "https"):
        return f"url scheme {parts.scheme!r} must be http or https"
    if not parts.hostname:
        return "url must have a host"
    return None


def jwks_error(text: str) -> str | None:
    """A JSON Web Key Set: {"keys": [{"kty": ...}, ...]} (the key material is Envoy's to use)."""
    if len(text.encode()) > MAX_JWKS_BYTES:
        return f"jwks is larger than {MAX_JWKS_BYTES} bytes"
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        return f"jwks parse error: {exc}"
    keys = parsed.get("keys") if isinstance(parsed, dict) else None
    if not isinstance(keys, list) or not keys:
        return 'jwks parse error: expected {"keys": [...]} with at least one key'
    for index, key in enumerate(keys):
        problem = _key_error(key)
        if problem:
            return f"jwks parse error: keys[{index}]: {problem}"
    return None


# The key material Envoy insists on (it refuses the whole listener over one bad key): the
# members each key type needs, base64url-encoded, EC coordinates of their curve's size.
_MEMBERS = {"RSA": ("n", "e"), "EC": ("x", "y"), "oct": ("k",), "OKP": ("x",)}
_CURVE_BYTES = {"P-256": 32, "P-384": 48, "P-521": 66}


def _key_error(key: Any) -> str | None:
    if not isinstance(key, dict) or key.get("kty") not in _MEMBERS:
        return f"kty must be one of {', '.join(_MEMBERS)}"
    decoded = {}
    for member in _MEMBERS[key["kty"]]:
        value = key.get(member)
        raw = _base64url(value) if isinstance(value, str) else None
        if not raw:
            return f"{member} must be non-empty base64url"
        decoded[member] = raw
    if key["kty"] == "EC":
        size = _CURVE_BYTES.get(str(key.get("crv")))
        if size is None:
            return f"crv must be one of {', '.join(_CURVE_BYTES)}"
        if len(decoded["x"]) != size or len(decoded["y"]) != size:
            return f"x and y must be {size} bytes for {key['crv']}"
    return None


def _base64url(text: str) -> bytes | None:
    if not re.fullmatch(r"[A-Za-z0-9_-]+={0,2}", text):
        return None
    try:
        return base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    except (ValueError, binascii.Error):
        return None
