"""ServiceEntry: a service the mesh's registry does not know by itself (an external API, a
VM), and Istio's rules for it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sidemesh.api.networking.common import (
    Issues,
    Model,
    NonNegative,
    Port,
    WorkloadSelector,
    check_export_to,
    check_host,
    check_labels,
    check_port,
    host_error,
    is_ip,
    is_ip_or_cidr,
)

UNIX_PREFIX = "unix://"


class WorkloadEntry(Model):
    """An endpoint of a ServiceEntry (the spec of a WorkloadEntry)."""

    address: str | None = None
    ports: dict[str, int] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    network: str | None = None
    locality: str | None = None
    weight: NonNegative | None = None
    service_account: str | None = Field(None, alias="serviceAccount")


class ServiceEntry(Model):
    hosts: tuple[str, ...] = Field(default_factory=tuple)
    addresses: tuple[str, ...] = Field(default_factory=tuple)
    ports: tuple[Port, ...] = Field(default_factory=tuple)
    location: Literal["MESH_EXTERNAL", "MESH_INTERNAL"] | None = None
    resolution: Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"] | None = None
    endpoints: tuple[WorkloadEntry, ...] = Field(default_factory=tuple)
    workload_selector: WorkloadSelector | None = Field(None, alias="workloadSelector")
    export_to: tuple[str, ...] = Field(default_factory=tuple, alias="exportTo")
    subject_alt_names: tuple[str, ...] = Field(default_factory=tuple, alias="subjectAltNames")


def check_service_entry(spec: ServiceEntry, issues: Issues) -> None:
    resolution = spec.resolution or "NONE"
    if not spec.hosts:
        issues.add("spec.hosts", "service entry must have at least one host")
    for index, host in enumerate(spec.hosts):
        check_host(issues, f"spec.hosts[{index}]", host, allow_full_wildcard=False)
    for index, address in enumerate(spec.addresses):
        if not is_ip_or_cidr(address):
            issues.add(f"spec.addresses[{index}]", f"{address!r} is not an IP address or CIDR")
        elif "/" in address and resolution not in ("NONE", "STATIC"):
            issues.add(
                f"spec.addresses[{index}]",
                "CIDR addresses are allowed only for NONE/STATIC resolution types",
            )
    if spec.workload_selector is not None and spec.endpoints:
        issues.add("spec", "only one of workloadSelector or endpoints is allowed")
    if spec.workload_selector is not None:
        check_labels(issues, "spec.workloadSelector.labels", spec.workload_selector.labels)
    names: dict[str, int] = {}
    numbers: dict[int, int] = {}
    if not spec.ports:
        issues.add("spec.ports", "service entry must have at least one port")
    for index, port in enumerate(spec.ports):
        path = f"spec.ports[{index}]"
        check_port(issues, path, port, name_required=True)
        if port.name and port.name in names:
            issues.add(
                f"{path}.name", f"port name {port.name!r} already used by ports[{names[port.name]}]"
            )
        if port.number in numbers:
            issues.add(
                f"{path}.number",
                f"port number {port.number} already used by ports[{numbers[port.number]}]",
            )
        names.setdefault(port.name or "", index)
        numbers.setdefault(port.number, index)
    if resolution == "NONE" and spec.endpoints:
        issues.add("spec.endpoints", "no endpoints should be provided for resolution type NONE")
    if resolution in ("DNS", "DNS_ROUND_ROBIN") and not spec.endpoints:
        for index, host in enumerate(spec.hosts):
            if host.startswith("*"):
                issues.add(
                    f"spec.hosts[{index}]",
                    "DNS resolution without endpoints needs hosts without wildcards",
                )
    if resolution == "DNS_ROUND_ROBIN" and len(spec.endpoints) > 1:
        issues.add("spec.endpoints", "DNS_ROUND_ROBIN allows at most one endpoint")
    for index, endpoint in enumerate(spec.endpoints):
        _check_endpoint(issues, f"spec.endpoints[{index}]", endpoint, resolution, names)
    check_export_to(issues, "spec.exportTo", spec.export_to)


def _check_endpoint(
    issues: Issues, path: str, endpoint: WorkloadEntry, resolution: str, ports: dict[str, int]
) -> None:
    address = endpoint.address or ""
    if not address:
        if not endpoint.network:
            issues.add(f"{path}.address", "address is required")
    elif address.startswith(UNIX_PREFIX):
        if endpoint.ports:
            issues.add(f"{path}.ports", f"unix endpoint {address} must not include ports")
    elif resolution == "STATIC" and not is_ip(address):
        issues.add(f"{path}.address", f"{address!r} is not an IP address (resolution STATIC)")
    elif not is_ip(address) and host_error(address, allow_full_wildcard=False):
        issues.add(f"{path}.address", f"{address!r} is not a valid FQDN or IP address")
    for name, number in endpoint.ports.items():
        if name not in ports:
            issues.add(f"{path}.ports.{name}", f"port {name!r} is not defined by the service entry")
        if not 1 <= number <= 65535:
            issues.add(f"{path}.ports.{name}", "port number must be between 1 and 65535")
    check_labels(issues, f"{path}.labels", endpoint.labels)
