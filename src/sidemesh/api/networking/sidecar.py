"""Sidecar: which services a workload's proxy sees (egress) and what it accepts (ingress),
and Istio's rules for it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sidemesh.api.networking.common import (
    Destination,
    Issues,
    Model,
    Port,
    WorkloadSelector,
    check_destination,
    check_labels,
    check_namespace_host,
    check_port,
    is_ip,
)

CaptureMode = Literal["DEFAULT", "IPTABLES", "NONE"]
UNIX_PREFIX = "unix://"


class IngressListener(Model):
    port: Port
    bind: str | None = None
    capture_mode: CaptureMode | None = Field(None, alias="captureMode")
    default_endpoint: str | None = Field(None, alias="defaultEndpoint")


class EgressListener(Model):
    port: Port | None = None
    bind: str | None = None
    capture_mode: CaptureMode | None = Field(None, alias="captureMode")
    hosts: tuple[str, ...] = Field(default_factory=tuple)


class OutboundTrafficPolicy(Model):
    mode: Literal["REGISTRY_ONLY", "ALLOW_ANY"] | None = None
    egress_proxy: Destination | None = Field(None, alias="egressProxy")


class Sidecar(Model):
    workload_selector: WorkloadSelector | None = Field(None, alias="workloadSelector")
    ingress: tuple[IngressListener, ...] = Field(default_factory=tuple)
    egress: tuple[EgressListener, ...] = Field(default_factory=tuple)
    outbound_traffic_policy: OutboundTrafficPolicy | None = Field(
        None, alias="outboundTrafficPolicy"
    )


def check_sidecar(spec: Sidecar, issues: Issues) -> None:
    if spec.workload_selector is not None:
        # no labels: Istio only warns (the Sidecar then applies to the whole namespace)
        check_labels(issues, "spec.workloadSelector.labels", spec.workload_selector.labels)
    if not spec.egress and not spec.ingress and spec.outbound_traffic_policy is None:
        issues.add("spec", "sidecar: empty configuration provided")
    ports: set[int] = set()
    for index, ingress in enumerate(spec.ingress):
        path = f"spec.ingress[{index}]"
        check_port(issues, f"{path}.port", ingress.port, name_required=False)
        if ingress.port.number in ports:
            issues.add(f"{path}.port.number", "sidecar: ports on IP bound listeners must be unique")
        ports.add(ingress.port.number)
        if ingress.bind and not is_ip(ingress.bind):
            issues.add(f"{path}.bind", f"{ingress.bind!r} is not an IP address")
        if ingress.default_endpoint:
            _check_default_endpoint(issues, f"{path}.defaultEndpoint", ingress.default_endpoint)
    ports = set()
    for index, egress in enumerate(spec.egress):
        path = f"spec.egress[{index}]"
        if egress.port is None:
            if index != len(spec.egress) - 1:
                issues.add(
                    path,
                    "sidecar: the egress listener with empty port should be the "
                    "last listener in the list",
                )
        else:
            if egress.port.number != 0 or not (egress.bind or "").startswith(UNIX_PREFIX):
                check_port(issues, f"{path}.port", egress.port, name_required=False)
            if egress.port.number in ports:
                issues.add(
                    f"{path}.port.number", "sidecar: ports on IP bound listeners must be unique"
                )
            ports.add(egress.port.number)
        if egress.bind and not egress.bind.startswith(UNIX_PREFIX) and not is_ip(egress.bind):
            issues.add(f"{path}.bind", f"{egress.bind!r} is not an IP address")
        if not egress.hosts:
            issues.add(f"{path}.hosts", "sidecar: egress listener must contain at least one host")
        for number, host in enumerate(egress.hosts):
            check_namespace_host(issues, f"{path}.hosts[{number}]", host)
    policy = spec.outbound_traffic_policy
    if policy is not None and policy.egress_proxy is not None:
        if policy.mode != "ALLOW_ANY":
            issues.add(
                "spec.outboundTrafficPolicy.egressProxy",
                "egressProxy must be set only with ALLOW_ANY mode",
            )
        if policy.egress_proxy.port is None:
            issues.add("spec.outboundTrafficPolicy.egressProxy.port", "egressProxy needs a port")
        check_destination(issues, "spec.outboundTrafficPolicy.egressProxy", policy.egress_proxy)


def _check_default_endpoint(issues: Issues, path: str, endpoint: str) -> None:
    if endpoint.startswith(UNIX_PREFIX):
        return
    host, sep, port = endpoint.rpartition(":")
    if not sep or host not in ("", "127.0.0.1", "0.0.0.0", "[::1]", "[::]"):
        issues.add(
            path,
            "defaultEndpoint must be of form 127.0.0.1:<port>, 0.0.0.0:<port>, "
            "[::1]:<port>, [::]:<port>, :<port> or unix://<path>",
        )
    elif not port.isdigit() or not 1 <= int(port) <= 65535:
        issues.add(path, f"defaultEndpoint port {port!r} is not a port number")
