"""Istio's security API (`security.istio.io` v1, v1beta1): AuthorizationPolicy and
RequestAuthentication as typed, frozen models, and `validate`, the one parse + validate step
every consumer shares (PeerAuthentication is converted by `xds.convert`)."""

from sidemesh.api.security.authorization_policy import AuthorizationPolicy
from sidemesh.api.security.request_authentication import RequestAuthentication
from sidemesh.api.security.validation import (
    GROUP,
    KINDS,
    VERSIONS,
    deny_all_stand_in,
    is_security,
    validate,
)

__all__ = [
    "GROUP",
    "KINDS",
    "VERSIONS",
    "AuthorizationPolicy",
    "RequestAuthentication",
    "deny_all_stand_in",
    "is_security",
    "validate",
]
