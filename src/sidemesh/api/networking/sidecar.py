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
from sidemesh.api.networking.destination_rule import ConnectionPool
from sidemesh.api.networking.gateway import ServerTLS

CaptureMode = Literal["DEFAULT", "IPTABLES", "NONE"]
UNIX_PREFIX = "unix://"


class IngressListener(Model):
    port: Port
    bind: str | None = None
    capture_mode: CaptureMode | None = Field(None, alias="captureMode")
    default_endpoint: str | None = Field(None, alias="defaultEndpoint")
    tls: ServerTLS | None = None
    connection_pool: ConnectionPool | None = Field(None, alias="connectionPool")


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
        if ingress.tls is not None:
            _check_ingress_tls(issues, f"{path}.tls", ingress.tls)
        pool = ingress.connection_pool
        if pool is not None and pool.tcp is None and pool.http is None:
            issues.add(f"{path}.connectionPool", "connection pool must have at least one field")
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
        if egress.bind and egress.port is None:
            issues.add(f"{path}.port", "sidecar: a listener with a bind address needs a port")
        if (egress.bind or "").startswith(UNIX_PREFIX) and egress.capture_mode == "IPTABLES":
            issues.add(
                f"{path}.captureMode",
                "sidecar: captureMode must be DEFAULT or NONE for a unix domain socket bind",
            )
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


def _check_ingress_tls(issues: Issues, path: str, tls: ServerTLS) -> None:
    """Istio's: a sidecar terminates TLS for callers outside the mesh with the pod's own
    certificate files (SIMPLE or MUTUAL); Secrets and redirects are gateway features."""
    if tls.https_redirect:
        issues.add(f"{path}.httpsRedirect", "sidecar: httpsRedirect is not supported")
    if tls.credential_name:
        issues.add(f"{path}.credentialName", "sidecar: credentialName is not supported")
    if tls.mode not in ("SIMPLE", "MUTUAL"):
        issues.add(f"{path}.mode", "sidecar: only SIMPLE and MUTUAL TLS modes are supported")
    if not tls.server_certificate:
        issues.add(f"{path}.serverCertificate", "TLS requires a serverCertificate")
    if not tls.private_key:
        issues.add(f"{path}.privateKey", "TLS requires a privateKey")
    if tls.mode == "MUTUAL" and not tls.ca_certificates:
        issues.add(f"{path}.caCertificates", "MUTUAL TLS requires caCertificates")
