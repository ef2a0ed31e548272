"""The listener a proxyless gRPC *server* asks for (gRFC A36, xDS server credentials).

An xDS-enabled gRPC server asks LDS for `xds.istio.io/grpc/lds/inbound/IP:PORT` (the bootstrap's
`server_listener_resource_name_template`, Istio's name, with the address it listens on). It
gets a listener on that address with one filter chain, as Istio builds it: an
HttpConnectionManager whose only route is a non-forwarding one (the server handles the call
itself) and whose filters end with the router, and — when the workload's PeerAuthentication is
STRICT — a TLS transport socket that requires a client certificate, both the server's
certificate and the trusted roots taken from the bootstrap's `default` certificate provider.

gRPC's filter chain matching cannot tell TLS from plaintext, so PERMISSIVE is served as
plaintext, unless the pod is labelled `security.istio.io/tlsMode: istio` (clients then use mTLS,
auto mTLS), which makes it STRICT — Istio's rule. A port no service of the pod declares gets
no listener (gRPC then does not serve it), as in Istio.

Authorization: the AuthorizationPolicies that select the workload become RBAC HTTP filters
before the router (gRFC A41, `grpc_gen_authz`): DENY, then ALLOW. A rule gRPC cannot honour is
made stricter (an ALLOW rule allows nothing, a DENY rule denies every call) and a
RequestAuthentication refuses every call (gRPC cannot verify JWTs); the reasons are logged.
Pure functions of (snapshot, proxy, name), but for that log line.
"""

# mypy: disable-error-code="import-untyped"

from __future__ import annotations

import logging
from typing import Any, Final

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2  # noqa: F401  (registers type)
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401  (registers type)
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401  (registers type)
from google.protobuf import json_format

from sidemesh.api import names
from sidemesh.xds.envoy_json import socket_address, typed
from sidemesh.xds.grpc_gen_authz import grpc_authz
from sidemesh.xds.model import MeshSnapshot, MtlsMode
from sidemesh.xds.proxy import ProxyInfo

SERVER_LISTENER_PREFIX: Final = "xds.istio.io/grpc/lds/inbound/"
SERVER_LISTENER_TEMPLATE: Final = f"{SERVER_LISTENER_PREFIX}%s"
CERTIFICATE_PROVIDER: Final = "default"
_HCM: Final = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
log = logging.getLogger("sidemesh.xds.grpc_gen")


def is_server_listener(name: str) -> bool:
    return name.startswith(SERVER_LISTENER_PREFIX)


def listen_address(name: str) -> tuple[str, int] | None:
    """`xds.istio.io/grpc/lds/inbound/IP:PORT` (IPv6 in brackets) → (IP, PORT), else None."""
    rest = name.removeprefix(SERVER_LISTENER_PREFIX)
    host, colon, port = rest.rpartition(":")
    if rest == name or not colon or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    host = host.removeprefix("[").removesuffix("]")
    return (host, int(port)) if host else None


def server_mtls_mode(snapshot: MeshSnapshot, proxy: ProxyInfo, port: int) -> MtlsMode:
    """STRICT or DISABLE for the port: PERMISSIVE is plaintext unless the pod asks auto mTLS
    of its clients (`security.istio.io/tlsMode: istio`)."""
    labels = proxy.label_map
    mode = snapshot.mtls_mode(proxy.namespace, labels, port)
    if mode == "PERMISSIVE":
        tls_mode = labels.get(names.LABEL_TLS_MODE)
        return "STRICT" if tls_mode == "istio" else "DISABLE"
    return mode


def downstream_tls() -> dict[str, Any]:
    context = typed(
        "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        common_tls_context={
            "tls_certificate_provider_instance": {"instance_name": CERTIFICATE_PROVIDER},
            "validation_context": {
                "ca_certificate_provider_instance": {"instance_name": CERTIFICATE_PROVIDER}
            },
        },
        require_client_certificate=True,
    )
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def server_listener(name: str, snapshot: MeshSnapshot, proxy: ProxyInfo) -> Any | None:
    """The listener a gRPC server asked for by `name`, or None (not one of its ports)."""
    address = listen_address(name)
    if address is None:
        return None
    host, port = address
    instances = snapshot.instances_by_address.get(proxy.ip, ())
    if not any(endpoint.port == port for _, endpoint in instances):
        return None
    mode = server_mtls_mode(snapshot, proxy, port)
    authz = grpc_authz(snapshot, proxy.namespace, proxy.label_map)
    for note in authz.notes:
        log.warning("gRPC server %s port %d: %s", proxy.node_id, port, note)
    router = {"name": "envoy.filters.http.router",
              "typed_config": typed("envoy.extensions.filters.http.router.v3.Router")}  # fmt: skip
    suffix = "mtls" if mode == "STRICT" else "plaintext"
    manager = typed(
        _HCM,
        stat_prefix=f"inbound_{port}",
        route_config={"name": "inbound", "virtual_hosts": [{
            "name": "inbound", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "non_forwarding_action": {}}],
        }]},
        http_filters=[*authz.http_filters, router],
    )  # fmt: skip
    chain: dict[str, Any] = {
        "name": f"inbound-{suffix}",
        "filters": [{"name": f"inbound-hcm-{suffix}", "typed_config": manager}],
    }
    if mode == "STRICT":
        chain["transport_socket"] = downstream_tls()
    listener = {"name": name, "address": socket_address(host, port), "filter_chains": [chain]}
    return json_format.ParseDict(listener, listener_pb2.Listener())
