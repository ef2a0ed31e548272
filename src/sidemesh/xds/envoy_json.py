"""Envoy configuration building blocks, written in Envoy's own JSON shape (as in its docs and
YAML examples) so each reads like the reference: typed `Any`s, SDS references to the agent's
`sds-grpc` cluster, TLS contexts, the network and listener filters the sidecar uses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from sidemesh.api.networking import parse_duration

SDS_CLUSTER = "sds-grpc"
SECRET_WORKLOAD = "default"
SECRET_ROOT = "ROOTCA"
TLS_MODE_KEY = "tlsMode"
TLS_MODE_ISTIO = "istio"
CONNECT_TIMEOUT = "10s"


def typed(type_name: str, **fields: Any) -> dict[str, Any]:
    return {"@type": f"type.googleapis.com/{type_name}", **fields}


def sds_secret(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "sds_config": {
            "api_config_source": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": SDS_CLUSTER}}],
                "set_node_on_first_message_only": True,
            },
            "resource_api_version": "V3",
            "initial_fetch_timeout": "0s",
        },
    }


def common_tls_context(san_matchers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "tls_certificate_sds_secret_configs": [sds_secret(SECRET_WORKLOAD)],
        "combined_validation_context": {
            "default_validation_context": {"match_typed_subject_alt_names": list(san_matchers)},
            "validation_context_sds_secret_config": sds_secret(SECRET_ROOT),
        },
    }


def socket_address(ip: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": ip, "port_value": port}}


def tcp_proxy(cluster: str) -> dict[str, Any]:
    config = typed("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                 stat_prefix=cluster, cluster=cluster)  # fmt: skip
    return {"name": "envoy.filters.network.tcp_proxy", "typed_config": config}


def http_connection_manager(
    stat_prefix: str,
    domains_to_cluster: Sequence[tuple[Sequence[str], str]],
    *,
    routes: Sequence[dict[str, Any]] | None = None,
    filters: Sequence[dict[str, Any]] = (),
    **extra: Any,
) -> dict[str, Any]:
    """One route to a cluster per domain list, or, given `routes`, one virtual host with
    those (a VirtualService's). `filters` run before the router."""
    virtual_hosts = [
        {
            "name": f"{cluster}:{index}",
            "domains": list(domains),
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "0s"}}],
        }
        for index, (domains, cluster) in enumerate(domains_to_cluster)
    ]
    route_config: dict[str, Any] = {"name": stat_prefix, "virtual_hosts": virtual_hosts}
    if routes is not None:
        route_config["virtual_hosts"] = [{"name": stat_prefix, "domains": ["*"],
                                          "routes": list(routes)}]  # fmt: skip
        # A route may name a subset no DestinationRule defines (yet): Envoy answers 503
        # instead of refusing the whole listener, as in Istio.
        route_config["validate_clusters"] = False
    router = typed("envoy.extensions.filters.http.router.v3.Router")
    config = typed(
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        stat_prefix=stat_prefix,
        codec_type="AUTO",
        route_config=route_config,
        http_filters=[*filters, {"name": "envoy.filters.http.router", "typed_config": router}],
        **extra,
    )
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": config}


def http2_protocol_options(
    common: dict[str, Any] | None = None, *, http1: bool = False
) -> dict[str, Any]:
    """Upstream HTTP/2 (or, with `http1`, HTTP/1.1) with `common` HTTP protocol options."""
    explicit: dict[str, Any] = (
        {"http_protocol_options": {}} if http1 else {"http2_protocol_options": {}}
    )
    options = typed("envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                   explicit_http_config=explicit)  # fmt: skip
    if common:
        options["common_http_protocol_options"] = common
    return {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": options}


def listener_filter(short: str, type_name: str) -> dict[str, Any]:
    return {"name": f"envoy.filters.listener.{short}", "typed_config": typed(type_name)}


ORIGINAL_DST = listener_filter(
    "original_dst", "envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
)
TLS_INSPECTOR = listener_filter(
    "tls_inspector", "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
)


def canonical(data: Any) -> str:
    """Canonical JSON: the memo key of a generated piece."""
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS).decode()


def duration(text: str) -> str:
    """Istio's `1m30s`/`500ms` as protobuf JSON's `90.000s`."""
    return f"{parse_duration(text).total_seconds():.3f}s"
