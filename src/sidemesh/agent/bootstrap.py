"""Envoy's bootstrap from the agent's settings (pure: settings in, JSON-ready dict out).

What Envoy starts with, everything else arrives over xDS:

* `node`: Istio's sidecar node id `sidecar~IP~POD.NS~NS.svc.cluster.local` and metadata (the
  ISTIO_META_* env plus what the control plane needs to know about the workload).
* ADS: LDS and CDS from the `xds-grpc` cluster, the control plane. The stream is re-dialled
  after a jittered back-off of at most 2 s (Envoy's default grows to 30 s, so a control plane
  that was down for a while got its sidecars back only up to 30 s after it was ready again),
  and HTTP/2 pings notice a control plane that vanished without closing the connection (a lost
  node) within 40 s instead of TCP keepalive's 5 minutes. Over TLS Envoy presents the
  workload certificate (SDS `default`), trusts only the mesh root (SDS `ROOTCA`), and requires
  the control plane's certificate to name the host Envoy dialled: the DNS name of the Service
  (`istiod.istio-system.svc`, or `istiod-<rev>…`), exactly what istiod's serving certificate
  carries; ISTIOD_SAN overrides it when the address is an IP. An IP address is matched as an
  IP SAN.
* `sds-grpc`: the agent's SDS server on a Unix socket, for secrets `default` and `ROOTCA`.
* Admin on localhost only; `prometheus_stats` and `agent` clusters behind the two public
  listeners: 15090 `/stats/prometheus` → the admin's Prometheus stats, and 15021
  `/healthz/ready` → the agent's `/healthz/ready` (as Istio does). Routing readiness through
  Envoy to the agent means 15021 answers 200 only when Envoy is serving *and* the agent has
  seen Envoy take its first LDS/CDS and holds a certificate; a direct_response would say
  "ready" before any configuration arrived.
"""

from __future__ import annotations

import json
from typing import Any, Final

from sidemesh.agent import parsing
from sidemesh.agent.settings import AgentSettings
from sidemesh.api.envoy_runtime import layered_runtime

XDS_CLUSTER: Final = "xds-grpc"
SDS_CLUSTER: Final = "sds-grpc"
AGENT_CLUSTER: Final = "agent"
PROMETHEUS_CLUSTER: Final = "prometheus_stats"
WORKLOAD_SECRET: Final = "default"
ROOT_SECRET: Final = "ROOTCA"

# Re-dialling the control plane: jittered, between 0 and an interval that doubles from the base
# up to the maximum. The maximum bounds how long after a restarted control plane is ready a
# sidecar may still wait; while it is down each sidecar tries about once a second on average.
XDS_RETRY_BASE_INTERVAL: Final = "0.25s"
XDS_RETRY_MAX_INTERVAL: Final = "2s"
XDS_PING_INTERVAL: Final = "30s"
XDS_PING_TIMEOUT: Final = "10s"

_TYPE_PREFIX: Final = "type.googleapis.com/"
_HTTP_PROTOCOL_OPTIONS: Final = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def loopback(settings: AgentSettings) -> str:
    """Where Envoy's admin and the agent listen for each other: the pod's IP family."""
    return "::1" if ":" in settings.identity.instance_ip else "127.0.0.1"


def node_id(settings: AgentSettings) -> str:
    identity = settings.identity
    return (
        f"{settings.proxy_type}~{identity.instance_ip}~{identity.pod_name}.{identity.namespace}"
        f"~{identity.domain}"
    )


def node_metadata(settings: AgentSettings) -> dict[str, Any]:
    identity = settings.identity
    metadata: dict[str, Any] = dict(settings.metadata)
    metadata.update(
        {
            "NAME": identity.pod_name,
            "NAMESPACE": identity.namespace,
            "SERVICE_ACCOUNT": identity.service_account,
            "INSTANCE_IPS": identity.instance_ip,
            "LABELS": dict(settings.labels),
            "ISTIO_VERSION": settings.version,
            "CLUSTER_ID": settings.cluster_id,
            "MESH_ID": settings.mesh_id,
            "INTERCEPTION_MODE": settings.interception_mode,
            "ENVOY_STATUS_PORT": settings.ports.health,
            "ENVOY_PROMETHEUS_PORT": settings.ports.prometheus,
        }
    )
    if settings.revision:
        metadata["ISTIO_REVISION"] = settings.revision
    return metadata


def _service_cluster(settings: AgentSettings) -> str:
    labels = settings.labels
    name = (
        labels.get("service.istio.io/canonical-name")
        or labels.get("app")
        or settings.metadata.get("WORKLOAD_NAME")
        or settings.identity.pod_name
    )
    return f"{name}.{settings.identity.namespace}"


def _socket_address(address: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"protocol": "TCP", "address": address, "port_value": port}}


def _load_assignment(name: str, address: dict[str, Any]) -> dict[str, Any]:
    return {
        "cluster_name": name,
        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
    }


def _http2_options(http2: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        _HTTP_PROTOCOL_OPTIONS: {
            "@type": _TYPE_PREFIX + _HTTP_PROTOCOL_OPTIONS,
            "explicit_http_config": {"http2_protocol_options": http2 or {}},
        }
    }


def _static_cluster(name: str, host: str, port: int) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "0.250s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": _load_assignment(name, _socket_address(host, port)),
    }


def _sds_config() -> dict[str, Any]:
    return {
        "api_config_source": {
            "api_type": "GRPC",
            "transport_api_version": "V3",
            "set_node_on_first_message_only": True,
            "grpc_services": [{"envoy_grpc": {"cluster_name": SDS_CLUSTER}}],
        },
        "resource_api_version": "V3",
        "initial_fetch_timeout": "0s",  # no certificate, no config: wait for it
    }


def _control_plane_tls(settings: AgentSettings) -> dict[str, Any]:
    address = settings.control_plane.discovery_address
    name = settings.control_plane.server_name(address)
    san_type = "IP_ADDRESS" if parsing.is_ip_address(name) else "DNS"
    context: dict[str, Any] = {
        "@type": _TYPE_PREFIX + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": {
            "alpn_protocols": ["h2"],
            "tls_certificate_sds_secret_configs": [
                {"name": WORKLOAD_SECRET, "sds_config": _sds_config()}
            ],
            "combined_validation_context": {
                "default_validation_context": {
                    "match_typed_subject_alt_names": [
                        {"san_type": san_type, "matcher": {"exact": name}}
                    ]
                },
                "validation_context_sds_secret_config": {
                    "name": ROOT_SECRET,
                    "sds_config": _sds_config(),
                },
            },
        },
    }
    if san_type == "DNS":
        context["sni"] = name
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def _xds_cluster(settings: AgentSettings) -> dict[str, Any]:
    host, port = parsing.split_host_port(settings.control_plane.discovery_address)
    cluster: dict[str, Any] = {
        "name": XDS_CLUSTER,
        "type": "STATIC" if parsing.is_ip_address(host) else "STRICT_DNS",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": _load_assignment(XDS_CLUSTER, _socket_address(host, port)),
        "typed_extension_protocol_options": _http2_options(
            {
                "connection_keepalive": {
                    "interval": XDS_PING_INTERVAL,
                    "timeout": XDS_PING_TIMEOUT,
                }
            }
        ),
        "upstream_connection_options": {"tcp_keepalive": {"keepalive_time": 300}},
    }
    if not parsing.is_ip_address(host):
        cluster["dns_lookup_family"] = "V4_PREFERRED"
    if not settings.control_plane.plaintext:
        cluster["transport_socket"] = _control_plane_tls(settings)
    return cluster


def _sds_cluster(settings: AgentSettings) -> dict[str, Any]:
    return {
        "name": SDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": _load_assignment(
            SDS_CLUSTER, {"pipe": {"path": str(settings.paths.sds_socket)}}
        ),
        "typed_extension_protocol_options": _http2_options(),
    }


def _http_listener(name: str, address: str, port: int, prefix: str, cluster: str) -> dict[str, Any]:
    manager = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    return {
        "name": name,
        "address": _socket_address(address, port),
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": _TYPE_PREFIX + manager,
                            "codec_type": "AUTO",
                            "stat_prefix": name,
                            "route_config": {
                                "virtual_hosts": [
                                    {
                                        "name": "backend",
                                        "domains": ["*"],
                                        "routes": [
                                            {
                                                "match": {"prefix": prefix},
                                                "route": {"cluster": cluster},
                                            }
                                        ],
                                    }
                                ]
                            },
                            "http_filters": [
                                {
                                    "name": "envoy.filters.http.router",
                                    "typed_config": {
                                        "@type": _TYPE_PREFIX
                                        + "envoy.extensions.filters.http.router.v3.Router"
                                    },
                                }
                            ],
                        },
                    }
                ]
            }
        ],
    }


def _overload_manager() -> dict[str, Any]:
    """No connection limit, said explicitly (Envoy warns at startup when nothing is said)."""
    monitor = "envoy.extensions.resource_monitors.downstream_connections.v3"
    return {
        "resource_monitors": [
            {
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": {
                    "@type": f"{_TYPE_PREFIX}{monitor}.DownstreamConnectionsConfig",
                    "max_active_downstream_connections": 2147483647,
                },
            }
        ]
    }


def build_bootstrap(settings: AgentSettings) -> dict[str, Any]:
    localhost = loopback(settings)
    wildcard = "::" if ":" in localhost else "0.0.0.0"
    ports = settings.ports
    ads = {"ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "0s"}
    return {
        "node": {
            "id": node_id(settings),
            "cluster": _service_cluster(settings),
            "metadata": node_metadata(settings),
        },
        "admin": {"address": _socket_address(localhost, ports.admin)},
        "overload_manager": _overload_manager(),
        "layered_runtime": layered_runtime(),
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if settings.control_plane.delta else "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [
                    {
                        "envoy_grpc": {
                            "cluster_name": XDS_CLUSTER,
                            "retry_policy": {
                                "retry_back_off": {
                                    "base_interval": XDS_RETRY_BASE_INTERVAL,
                                    "max_interval": XDS_RETRY_MAX_INTERVAL,
                                }
                            },
                        }
                    }
                ],
            },
            "cds_config": dict(ads),
            "lds_config": dict(ads),
        },
        "static_resources": {
            "clusters": [
                _static_cluster(PROMETHEUS_CLUSTER, localhost, ports.admin),
                _static_cluster(AGENT_CLUSTER, localhost, ports.status),
                _sds_cluster(settings),
                _xds_cluster(settings),
            ],
            "listeners": [
                _http_listener(
                    "prometheus",
                    wildcard,
                    ports.prometheus,
                    "/stats/prometheus",
                    PROMETHEUS_CLUSTER,
                ),
                _http_listener("health", wildcard, ports.health, "/healthz/ready", AGENT_CLUSTER),
            ],
        },
    }


def render_bootstrap(settings: AgentSettings) -> bytes:
    """The bootstrap file's bytes (JSON, which Envoy reads as YAML too)."""
    return json.dumps(build_bootstrap(settings), indent=2).encode() + b"\n"
