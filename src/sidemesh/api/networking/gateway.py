"""Gateway: the ports, hosts and TLS a gateway workload (ingress or egress) serves, and
Istio's rules for it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sidemesh.api.networking.common import (
    Issues,
    Model,
    Port,
    check_labels,
    check_namespace_host,
    check_port,
    is_ip,
)

ServerTLSMode = Literal[
    "PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"
]
TLSVersion = Literal["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"]


class ServerTLS(Model):
    https_redirect: bool | None = Field(None, alias="httpsRedirect")
    mode: ServerTLSMode | None = None
    server_certificate: str | None = Field(None, alias="serverCertificate")
    private_key: str | None = Field(None, alias="privateKey")
    ca_certificates: str | None = Field(None, alias="caCertificates")
    credential_name: str | None = Field(None, alias="credentialName")
    subject_alt_names: tuple[str, ...] = Field(default_factory=tuple, alias="subjectAltNames")
    min_protocol_version: TLSVersion | None = Field(None, alias="minProtocolVersion")
    max_protocol_version: TLSVersion | None = Field(None, alias="maxProtocolVersion")
    cipher_suites: tuple[str, ...] = Field(default_factory=tuple, alias="cipherSuites")


class Server(Model):
    port: Port
    bind: str | None = None
    hosts: tuple[str, ...] = Field(default_factory=tuple)
    tls: ServerTLS | None = None
    name: str | None = None
    default_endpoint: str | None = Field(None, alias="defaultEndpoint")


class Gateway(Model):
    selector: dict[str, str] = Field(default_factory=dict)
    servers: tuple[Server, ...] = Field(default_factory=tuple)


TLS_PROTOCOLS = ("HTTPS", "TLS")


def check_gateway(spec: Gateway, issues: Issues) -> None:
    check_labels(issues, "spec.selector", spec.selector)
    if not spec.servers:
        issues.add("spec.servers", "gateway must have at least one server")
    names: dict[str, int] = {}
    for index, server in enumerate(spec.servers):
        path = f"spec.servers[{index}]"
        check_port(issues, f"{path}.port", server.port, name_required=True)
        protocol = (server.port.protocol or "").upper()
        if not server.port.protocol:
            issues.add(f"{path}.port.protocol", "port protocol is required")
        if server.name:
            if server.name in names:
                issues.add(
                    f"{path}.name",
                    f"server name {server.name!r} already used by servers[{names[server.name]}]",
                )
            names.setdefault(server.name, index)
        if not server.hosts:
            issues.add(f"{path}.hosts", "server config must contain at least one host")
        for number, host in enumerate(server.hosts):
            # `host` alone means `*/host`.
            check_namespace_host(
                issues, f"{path}.hosts[{number}]", host if "/" in host else f"*/{host}"
            )
        if server.bind and not is_ip(server.bind) and not server.bind.startswith("unix://"):
            issues.add(f"{path}.bind", f"{server.bind!r} is not an IP address")
        if server.tls is not None:
            _check_tls(issues, f"{path}.tls", server.tls, protocol)
        elif protocol == "HTTPS":
            issues.add(f"{path}.tls", "server must have TLS settings for HTTPS/TLS protocols")


def _check_tls(issues: Issues, path: str, tls: ServerTLS, protocol: str) -> None:
    if tls.https_redirect:
        return  # a redirect needs nothing else (Istio allows it on an HTTP port)
    if protocol not in TLS_PROTOCOLS:
        issues.add(path, "server cannot have TLS settings for plain text HTTP ports")
        return
    mode = tls.mode or "PASSTHROUGH"
    if mode in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL") and not tls.credential_name:
        if not tls.server_certificate:
            issues.add(
                f"{path}.serverCertificate",
                f"{mode} TLS requires a serverCertificate (or credentialName)",
            )
        if not tls.private_key:
            issues.add(
                f"{path}.privateKey", f"{mode} TLS requires a privateKey (or credentialName)"
            )
        if mode != "SIMPLE" and not tls.ca_certificates:
            issues.add(
                f"{path}.caCertificates", f"{mode} TLS requires caCertificates (or credentialName)"
            )
    if mode == "ISTIO_MUTUAL" and (
        tls.server_certificate or tls.private_key or tls.ca_certificates or tls.credential_name
    ):
        issues.add(path, "ISTIO_MUTUAL TLS cannot have associated certificates")
