"""Analyzer findings: Istio's codes where Istio has one, `SM…` codes for sidemesh's own."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    ERROR = "Error"
    WARNING = "Warning"
    INFO = "Info"

    @property
    def rank(self) -> int:
        return {"Error": 0, "Warning": 1, "Info": 2}[self.value]


@dataclass(frozen=True)
class Code:
    code: str
    name: str
    severity: Severity


NAMESPACE_NOT_INJECTED = Code("IST0102", "NamespaceNotInjected", Severity.INFO)
POD_MISSING_PROXY = Code("IST0103", "PodMissingProxy", Severity.WARNING)
NAMESPACE_MULTIPLE_INJECTION_LABELS = Code(
    "IST0123", "NamespaceMultipleInjectionLabels", Severity.WARNING
)
INVALID_WEBHOOK = Code("IST0139", "InvalidWebhook", Severity.ERROR)
INVALID_APPLICATION_UID = Code("IST0144", "InvalidApplicationUID", Severity.WARNING)
REFERENCED_RESOURCE_NOT_FOUND = Code("IST0101", "ReferencedResourceNotFound", Severity.ERROR)
SCHEMA_VALIDATION_ERROR = Code("IST0106", "SchemaValidationError", Severity.ERROR)
CONFLICTING_MESH_GATEWAY_VIRTUAL_SERVICE_HOSTS = Code(
    "IST0109", "ConflictingMeshGatewayVirtualServiceHosts", Severity.ERROR
)
VIRTUAL_SERVICE_UNREACHABLE_RULE = Code(
    "IST0130", "VirtualServiceUnreachableRule", Severity.WARNING
)
DESTINATION_RULE_SUBSET_NOT_SELECT_PODS = Code(
    "IST0173", "DestinationRuleSubsetNotSelectPods", Severity.WARNING
)
NO_MATCHING_WORKLOADS_FOUND = Code("IST0127", "NoMatchingWorkloadsFound", Severity.WARNING)
PRINCIPAL_OUTSIDE_TRUST_DOMAIN = Code("SM0014", "PrincipalOutsideTrustDomain", Severity.WARNING)
POD_REVISION_OUTDATED = Code("SM0001", "PodRevisionOutdated", Severity.WARNING)
NAMESPACE_REVISION_NOT_INSTALLED = Code("SM0002", "NamespaceRevisionNotInstalled", Severity.WARNING)
SIDECAR_LISTENER_NOT_SERVED = Code("SM0015", "SidecarListenerNotServed", Severity.WARNING)

ALL_CODES = (
    NO_MATCHING_WORKLOADS_FOUND,
    PRINCIPAL_OUTSIDE_TRUST_DOMAIN,
    NAMESPACE_NOT_INJECTED,
    POD_MISSING_PROXY,
    NAMESPACE_MULTIPLE_INJECTION_LABELS,
    INVALID_WEBHOOK,
    INVALID_APPLICATION_UID,
    POD_REVISION_OUTDATED,
    NAMESPACE_REVISION_NOT_INSTALLED,
    REFERENCED_RESOURCE_NOT_FOUND,
    SCHEMA_VALIDATION_ERROR,
    CONFLICTING_MESH_GATEWAY_VIRTUAL_SERVICE_HOSTS,
    VIRTUAL_SERVICE_UNREACHABLE_RULE,
    DESTINATION_RULE_SUBSET_NOT_SELECT_PODS,
    SIDECAR_LISTENER_NOT_SERVED,
)


@dataclass(frozen=True)
class Finding:
    code: Code
    object: str  # "Namespace shop", "Pod shop/web-1", "MutatingWebhookConfiguration x"
    message: str
    fix: str

    @property
    def severity(self) -> Severity:
        return self.code.severity

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code.code,
            "name": self.code.name,
            "severity": self.severity.value,
            "object": self.object,
            "message": self.message,
            "fix": self.fix,
        }

    def sort_key(self) -> tuple[int, str, str]:
        return (self.severity.rank, self.code.code, self.object)
