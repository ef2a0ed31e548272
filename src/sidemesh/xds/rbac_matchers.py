"""Envoy RBAC matchers for Istio's AuthorizationPolicy values: principals (SPIFFE ids, with
Istio's `*`, prefix and suffix forms), namespaces, CIDR blocks, hosts, paths (templates too)
and JWT claims (as jwt_authn's verified payload in the filter metadata). Pure."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

JWT_FILTER = "envoy.filters.http.jwt_authn"
JWT_PAYLOAD = "payload"  # jwt_authn `payload_in_metadata`: the verified token's claims
ANY: Mapping[str, Any] = {"any": True}


class Untranslatable(Exception):
    """A rule (or part of one) Envoy cannot be told; str() says why."""


def field_match(
    values: list[str] | None, negated: bool, matcher: Callable[[str], dict[str, Any]], kind: str
) -> dict[str, Any] | None:
    """One field: any of its values (`kind` is "ids" or "rules"); negated: none of them."""
    if not values:
        return None
    alternatives = [matcher(value) for value in values]
    either = alternatives[0] if len(alternatives) == 1 else {
        f"or_{kind}": {kind: alternatives}
    }  # fmt: skip
    return {"not_id" if kind == "ids" else "not_rule": either} if negated else either


# --- matchers ------------------------------------------------------------------------------------


def string_match(value: str, *, prefix: str = "", ignore_case: bool = False) -> dict[str, Any]:
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


def principal(value: str) -> dict[str, Any]:
    # Peer identities are SPIFFE URIs; Istio's principals are written without the scheme.
    return {"authenticated": {"principal_name": string_match(value, prefix="spiffe://")}}


def regex_principal(pattern: str) -> dict[str, Any]:
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


def namespace_principal(value: str) -> dict[str, Any]:
    return regex_principal(f"spiffe://[^/]+/ns/{_segment(value)}/.*")


def cidr(value: str) -> dict[str, Any]:
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise Untranslatable(f"{value!r} is not an IP address or CIDR block") from None
    return {"address_prefix": str(network.network_address), "prefix_len": network.prefixlen}


def host(value: str) -> dict[str, Any]:
    """The Host/:authority, case-insensitive, with or without a port."""
    exact = _authority(string_match(value, ignore_case=True))
    if value.startswith("*") or value.endswith("*"):
        return exact
    with_port = _authority({"prefix": f"{value}:", "ignore_case": True})
    return {"or_rules": {"rules": [exact, with_port]}}


def _authority(match: dict[str, Any]) -> dict[str, Any]:
    return {"header": {"name": ":authority", "string_match": match}}


def url_path(value: str) -> dict[str, Any]:
    if "{" in value:  # Istio's path templates: {*} one segment, {**} the rest
        # As a regex, not Envoy's uri_template permission: Envoy 1.40 aborts on that one in
        # RBAC (seen with `envoy --mode validate`), and a regex says the same thing.
        parts = [{"{*}": "[^/]+", "{**}": ".*"}.get(part, re.escape(part))
                 for part in re.split(r"(\{\*\*?\})", value)]  # fmt: skip
        return {"url_path": {"path": {"safe_regex": {"regex": "".join(parts)}}}}
    if value == "*":
        return {"url_path": {"path": {"safe_regex": {"regex": ".*"}}}}
    return {"url_path": {"path": string_match(value)}}


def _payload(path: Sequence[str], value: dict[str, Any]) -> dict[str, Any]:
    keys = [{"key": JWT_PAYLOAD}, *({"key": key} for key in path)]
    return {"metadata": {"filter": JWT_FILTER, "path": keys, "value": value}}


def claim(path: Sequence[str], value: str) -> dict[str, Any]:
    """A claim that is a string equal to `value` or a list containing it (`aud`, `groups`)."""
    match = string_match(value)
    return {"or_ids": {"ids": [
        _payload(path, {"string_match": match}),
        _payload(path, {"list_match": {"one_of": {"string_match": match}}}),
    ]}}  # fmt: skip


def request_principal(value: str) -> dict[str, Any]:
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
