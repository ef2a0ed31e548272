"""Istio's traffic API (`networking.istio.io` v1, v1beta1, v1alpha3): VirtualService,
DestinationRule, ServiceEntry, Sidecar and Gateway as typed, frozen models, and `validate`,
the one parse + validate step every consumer shares."""

from sidemesh.api.networking.common import Issue, parse_duration
from sidemesh.api.networking.destination_rule import DestinationRule
from sidemesh.api.networking.gateway import Gateway
from sidemesh.api.networking.service_entry import ServiceEntry
from sidemesh.api.networking.sidecar import Sidecar
from sidemesh.api.networking.validation import (
    GROUP,
    KINDS,
    VERSIONS,
    Kind,
    Resource,
    ValidationError,
    describe,
    is_networking,
    validate,
)
from sidemesh.api.networking.virtual_service import VirtualService

__all__ = [
    "GROUP",
    "KINDS",
    "VERSIONS",
    "DestinationRule",
    "Gateway",
    "Issue",
    "Kind",
    "Resource",
    "ServiceEntry",
    "Sidecar",
    "ValidationError",
    "VirtualService",
    "describe",
    "is_networking",
    "parse_duration",
    "validate",
]
