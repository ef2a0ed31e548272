"""Istio's standard metrics, made by upstream Envoy itself (pure: Envoy JSON in, JSON out).

Envoy's stats access logger (`envoy.access_loggers.stats`) turns every finished request or
connection into counter increments and histogram samples whose tags are access-log formatter
strings, so the series Istio's stats filter makes (`istio_requests_total{reporter=...,
source_workload=..., ...}`) are counted on Envoy's worker threads, with no per-request work in
the agent. Envoy's Prometheus output calls them `envoy_istio_*`; the agent serves them under
Istio's names on the merged endpoint (`agent/telemetry.py`).

Where each label comes from (see `api/telemetry/peer.py` for the exchange):

* outbound (`reporter="source"`): its own workload from the environment, the server's from
  the response headers (HTTP) or the endpoint's metadata (TCP: the registry's pod labels,
  `endpoint_metadata`, shared by every proxy like the endpoint), the server's principal from
  the upstream certificate, the destination service from the cluster's metadata;
* inbound (`reporter="destination"`): its own workload from the environment, the client's
  from the request headers (mTLS only), the client's principal from the downstream
  certificate, the destination service from the inbound port's service.

`connection_security_policy` is per filter chain inbound (the mTLS or the plaintext chain) and
per endpoint outbound (endpoint metadata on mTLS endpoints, set where auto mTLS decides;
`unknown` otherwise). TCP has no headers: the server side of a TCP series reads the client's
workload from the subject of its certificate, where the CA wrote what the client's agent
claimed (`api/telemetry/peer_certificate.py`; a `set_filter_state` filter computes each value
once the handshake is done, `peer_certificate_filter`). Why not PROXY protocol v2 TLVs, which
Envoy could send with `%ENVIRONMENT(...)%` values: the header travels in clear before the TLS
handshake, and the receiving listener filter runs before TLS and cannot be limited to mTLS
peers, so any caller could set the source address the server sees (AuthorizationPolicy
`ipBlocks`, logs) and claim any workload.
"""

# mypy: disable-error-code="import-untyped"

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Literal

from envoy.extensions.access_loggers.file.v3 import file_pb2  # noqa: F401  (register types)
from envoy.extensions.access_loggers.stats.v3 import stats_pb2  # noqa: F401
from envoy.extensions.filters.http.header_to_metadata.v3 import (  # noqa: F401
    header_to_metadata_pb2,
)
from xds.type.v3 import typed_struct_pb2  # noqa: F401

from sidemesh.api.telemetry import peer, peer_certificate
from sidemesh.api.telemetry.mesh import FileAccessLog
from sidemesh.xds.envoy_json import typed
from sidemesh.xds.telemetry_policy import SidePlan
from sidemesh.xds.telemetry_tracing import tracing_config

NO_PLAN: Final = SidePlan()

Reporter = Literal["source", "destination"]

METADATA_NAMESPACE: Final = "sidemesh"  # our cluster and endpoint metadata
STAT_PREFIX: Final = "istio"  # Envoy names the series envoy_istio_<name>
MUTUAL_TLS: Final = "mutual_tls"
NO_TLS: Final = "none"
HEADER_TO_METADATA: Final = "envoy.filters.http.header_to_metadata"
_STATS_LOGGER: Final = "envoy.access_loggers.stats"
_FILE_LOGGER: Final = "envoy.access_loggers.file"
_OVERWRITE: Final = "OVERWRITE_IF_EXISTS_OR_ADD"
EARLY_DATA_BYTES: Final = 1024 * 1024
_SET_FILTER_STATE: Final = "envoy.filters.network.set_filter_state"
_SET_FILTER_STATE_CONFIG: Final = "envoy.extensions.filters.network.set_filter_state.v3.Config"


def cluster_metadata(hostname: str) -> dict[str, Any]:
    """An outbound cluster's service, for the `destination_service*` labels."""
    name, _, rest = hostname.partition(".")
    namespace = rest.partition(".")[0] or peer.UNKNOWN
    return {"filter_metadata": {METADATA_NAMESPACE: {
        "service": hostname, "service_name": name, "service_namespace": namespace,
    }}}  # fmt: skip


def endpoint_metadata(workload: peer.WorkloadMetadata | None = None) -> dict[str, Any]:
    """What an mTLS endpoint adds to `connection_security_policy` (auto mTLS chose TLS) and,
    for TCP series, the destination workload it belongs to (the registry's word, so it is as
    shareable as the endpoint: no per-proxy bytes); a plaintext endpoint adds nothing, so the
    client side reports `unknown`, as Istio's does."""
    found: dict[str, Any] = {METADATA_NAMESPACE: {"connection_security_policy": MUTUAL_TLS}}
    if workload is not None:
        found[peer.METADATA_NAMESPACE] = {name: getattr(workload, name) for name, _, _ in peer.KEYS}
    return found


def _cluster(key: str) -> str:
    return f"%METADATA(CLUSTER:{METADATA_NAMESPACE}:{key})%"


def _workload_labels(role: str, values: dict[str, str], principal: str) -> dict[str, str]:
    return {
        f"{role}_workload": values["workload"],
        f"{role}_workload_namespace": values["namespace"],
        f"{role}_principal": principal,
        f"{role}_app": values["app"],
        f"{role}_version": values["version"],
    }


def _labels(
    reporter: Reporter,
    *,
    source: dict[str, str],
    source_principal: str,
    destination: dict[str, str],
    destination_principal: str,
    service: tuple[str, str, str],
    protocol: str,
    security: str,
    http: bool,
) -> list[tuple[str, str]]:
    """Istio's labels, in Istio's order."""
    labels: dict[str, str] = {"reporter": reporter}
    labels.update(_workload_labels("source", source, source_principal))
    labels.update(_workload_labels("destination", destination, destination_principal))
    labels.update(zip(("destination_service", "destination_service_name",
                       "destination_service_namespace"), service, strict=True))  # fmt: skip
    labels["request_protocol"] = protocol
    if http:
        labels["response_code"] = "%RESPONSE_CODE%"
        labels["grpc_response_status"] = "%GRPC_STATUS_NUMBER%"
    labels["response_flags"] = "%RESPONSE_FLAGS%"
    labels["connection_security_policy"] = security
    labels["source_canonical_service"] = source["canonical_service"]
    labels["destination_canonical_service"] = destination["canonical_service"]
    labels["source_canonical_revision"] = source["canonical_revision"]
    labels["destination_canonical_revision"] = destination["canonical_revision"]
    return list(labels.items())


def _own() -> dict[str, str]:
    return {name: peer.own(name) for name, _, _ in peer.KEYS}


def _received() -> dict[str, str]:
    return {name: peer.received(name) for name, _, _ in peer.KEYS}


def _upstream_host() -> dict[str, str]:
    """The destination workload an mTLS endpoint's metadata names (`endpoint_metadata`)."""
    return {name: f"%METADATA(UPSTREAM_HOST:{peer.METADATA_NAMESPACE}:{name})%"
            for name, _, _ in peer.KEYS}  # fmt: skip


def _from_certificate() -> dict[str, str]:
    """The client's workload as `peer_certificate_filter` found it in its certificate."""
    return {name: f"%FILTER_STATE({peer_certificate.filter_state_key(name)}:PLAIN)%"
            for name, _, _ in peer.KEYS}  # fmt: skip


def peer_certificate_filter() -> dict[str, Any]:
    """A network filter for inbound mTLS chains: once the TLS handshake is done, each value of
    the client's workload, read from its certificate's subject, into the connection's filter
    state (a CEL formatter with string functions; `unknown` for a subject without it).

    Envoy 1.40 has `on_downstream_tls_handshake` and the CEL formatter's `cel_config`; the
    Python protos (xds-protos) predate both, so the configuration travels as a TypedStruct,
    which Envoy converts with its own descriptors."""
    cel_formatter = {
        "name": "envoy.formatter.cel",
        "typed_config": typed("envoy.extensions.formatter.cel.v3.Cel",
                              cel_config={"enable_string_functions": True}),
    }  # fmt: skip
    values = [
        {
            "object_key": peer_certificate.filter_state_key(name),
            "factory_key": "envoy.string",
            "read_only": True,
            "format_string": {
                "text_format_source": {
                    "inline_string": f"%CEL({peer_certificate.cel_expression(name)})%"
                },
                "formatters": [cel_formatter],
            },
        }
        for name, _, _ in peer.KEYS
    ]
    return {
        "name": _SET_FILTER_STATE,
        "typed_config": typed(
            "xds.type.v3.TypedStruct",
            type_url=f"type.googleapis.com/{_SET_FILTER_STATE_CONFIG}",
            value={"on_downstream_tls_handshake": values},
        ),
    }


def _unknown() -> dict[str, str]:
    return {name: peer.UNKNOWN for name, _, _ in peer.KEYS}


def _stats_logger(
    counters: Sequence[tuple[str, str | int]],
    histograms: Sequence[tuple[str, str, str]],
    labels: Sequence[tuple[str, str]],
    plan: SidePlan,
    log_type: str | None = None,
) -> dict[str, Any] | None:
    """One stats access logger: counters (name, increment: a formatter or a fixed number) and
    histograms (name, unit, value formatter), all with `labels` but the ones `plan` removes;
    metrics `plan` disables are left out (None: nothing left)."""
    removed = set(plan.removed_tags)

    def stat(name: str) -> dict[str, Any]:
        kept = [(k, v) for k, v in labels if (name, k) not in removed]
        return {"name": name, "tags": [{"name": k, "value_format": v} for k, v in kept]}

    counters = [c for c in counters if c[0] not in plan.disabled_metrics]
    histograms = [h for h in histograms if h[0] not in plan.disabled_metrics]
    if not counters and not histograms:
        return None
    config = typed(
        "envoy.extensions.access_loggers.stats.v3.Config",
        stat_prefix=STAT_PREFIX,
        counters=[
            {"stat": stat(name),
             **({"value_fixed": by} if isinstance(by, int) else {"value_format": by})}
            for name, by in counters
        ],
        histograms=[
            {"stat": stat(name), "unit": unit, "value_format": value}
            for name, unit, value in histograms
        ],
    )  # fmt: skip
    logger: dict[str, Any] = {"name": _STATS_LOGGER, "typed_config": config}
    if log_type is not None:
        logger["filter"] = {"log_type_filter": {"types": [log_type]}}
    return logger


def _file_logger(log: FileAccessLog) -> dict[str, Any]:
    """An access log file in its format (text, or JSON of field → formatter)."""
    if log.json is not None:
        log_format: dict[str, Any] = {"json_format": dict(log.json)}
    else:
        log_format = {"text_format_source": {"inline_string": log.text or ""}}
    config = typed("envoy.extensions.access_loggers.file.v3.FileAccessLog",
                   path=log.path, log_format=log_format)  # fmt: skip
    return {"name": _FILE_LOGGER, "typed_config": config}


def _http_loggers(labels: Sequence[tuple[str, str]], plan: SidePlan) -> list[dict[str, Any]]:
    stats = _stats_logger(
        [("requests_total", 1)],
        [("request_duration_milliseconds", "Milliseconds", "%DURATION%"),
         ("request_bytes", "Bytes", "%DOWNSTREAM_WIRE_BYTES_RECEIVED%"),
         ("response_bytes", "Bytes", "%DOWNSTREAM_WIRE_BYTES_SENT%")],
        labels,
        plan,
    )  # fmt: skip
    files = [_file_logger(log) for log in plan.access_logs]
    return [*([stats] if stats is not None else []), *files]


def _tcp_loggers(labels: Sequence[tuple[str, str]], plan: SidePlan) -> list[dict[str, Any]]:
    """Opened when the upstream connection is up, bytes and closed when the connection ends
    (when the access log files are written too)."""
    opened = _stats_logger(
        [("tcp_connections_opened_total", 1)], [], labels, plan, "TcpUpstreamConnected"
    )
    closed = _stats_logger(
        [
            ("tcp_sent_bytes_total", "%BYTES_SENT%"),
            ("tcp_received_bytes_total", "%BYTES_RECEIVED%"),
            ("tcp_connections_closed_total", 1),
        ],
        [],
        labels,
        plan,
        "TcpConnectionEnd",
    )
    return [logger for logger in (opened, closed) if logger is not None] + _tcp_file_loggers(plan)


def _tcp_file_loggers(plan: SidePlan) -> list[dict[str, Any]]:
    """The plan's access log files, written once per connection (when it ends)."""
    return [
        {**_file_logger(log), "filter": {"log_type_filter": {"types": ["TcpConnectionEnd"]}}}
        for log in plan.access_logs
    ]


def _with_http_telemetry(config: dict[str, Any], labels: list[tuple[str, str]],
                         plan: SidePlan) -> None:  # fmt: skip
    config["access_log"] = [*config.get("access_log", []), *_http_loggers(labels, plan)]
    if plan.tracing is not None:
        config["tracing"] = tracing_config(plan.tracing)


def client_http_logs(hcm: dict[str, Any], plan: SidePlan) -> dict[str, Any]:
    """A client-side HTTP connection manager outside the mesh's services (the wildcard
    listeners of ServiceEntry hosts): the plan's access logs and tracing, no standard metrics
    and no peer headers (its upstreams are not sidecars)."""
    config = _http_config(hcm)
    files = [_file_logger(log) for log in plan.access_logs]
    if files:
        config["access_log"] = [*config.get("access_log", []), *files]
    if plan.tracing is not None:
        config["tracing"] = tracing_config(plan.tracing)
    return hcm


def client_tcp_logs(proxy: dict[str, Any], plan: SidePlan) -> dict[str, Any]:
    """`client_http_logs` for a TCP proxy: the plan's access logs, once per connection."""
    if plan.access_logs:
        config: dict[str, Any] = proxy["typed_config"]
        config["access_log"] = [*config.get("access_log", []), *_tcp_file_loggers(plan)]
    return proxy


def _header_filter(direction: str) -> dict[str, Any]:
    """Moves the peer headers into dynamic metadata (`unknown` when absent) and removes them."""
    rules = []
    for name, header, _ in peer.KEYS:
        target = {"metadata_namespace": peer.METADATA_NAMESPACE, "key": name}
        rules.append({"header": header, "remove": True, "on_header_present": target,
                      "on_header_missing": {**target, "value": peer.UNKNOWN}})  # fmt: skip
    config = typed("envoy.extensions.filters.http.header_to_metadata.v3.Config",
                   **{f"{direction}_rules": rules})  # fmt: skip
    return {"name": HEADER_TO_METADATA, "typed_config": config}


def _own_headers() -> list[dict[str, Any]]:
    return [{"header": {"key": header, "value": peer.own(name)}, "append_action": _OVERWRITE}
            for name, header, _ in peer.KEYS]  # fmt: skip


def _http_config(hcm: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = hcm["typed_config"]
    return config


def _request_protocol(protocol: str) -> str:
    return "grpc" if protocol == "GRPC" else "http"


def outbound_http(hcm: dict[str, Any], protocol: str, plan: SidePlan = NO_PLAN) -> dict[str, Any]:
    """A service listener's HTTP connection manager, counting `reporter="source"`: sends this
    workload's metadata, takes the server's from the response (removed before the app)."""
    config = _http_config(hcm)
    labels = _labels(
        "source",
        source=_own(), source_principal="%UPSTREAM_LOCAL_URI_SAN%",
        destination=_received(), destination_principal="%UPSTREAM_PEER_URI_SAN%",
        service=(_cluster("service"), _cluster("service_name"), _cluster("service_namespace")),
        protocol=_request_protocol(protocol),
        security=f"%METADATA(UPSTREAM_HOST:{METADATA_NAMESPACE}:connection_security_policy)%",
        http=True,
    )  # fmt: skip
    _with_http_telemetry(config, labels, plan)
    config["http_filters"] = [_header_filter("response"), *config["http_filters"]]
    route_config = config["route_config"]
    route_config["request_headers_to_add"] = [
        *route_config.get("request_headers_to_add", []),
        *_own_headers(),
    ]
    return hcm


def _service_labels(hostname: str) -> tuple[str, str, str]:
    if not hostname:
        return (peer.UNKNOWN, peer.UNKNOWN, peer.UNKNOWN)
    found = cluster_metadata(hostname)["filter_metadata"][METADATA_NAMESPACE]
    return (found["service"], found["service_name"], found["service_namespace"])


def inbound_http(hcm: dict[str, Any], protocol: str, *, service: str, tls: bool,
                 plan: SidePlan = NO_PLAN) -> dict[str, Any]:  # fmt: skip
    """An inbound chain's HTTP connection manager, counting `reporter="destination"`: over
    mTLS it takes the client's metadata from the request and answers with this workload's;
    in plaintext it removes the headers unread and tells nothing."""
    config = _http_config(hcm)
    labels = _labels(
        "destination",
        source=_received() if tls else _unknown(),
        source_principal="%DOWNSTREAM_PEER_URI_SAN%" if tls else peer.UNKNOWN,
        destination=_own(),
        destination_principal="%DOWNSTREAM_LOCAL_URI_SAN%" if tls else peer.UNKNOWN,
        service=_service_labels(service),
        protocol=_request_protocol(protocol),
        security=MUTUAL_TLS if tls else NO_TLS,
        http=True,
    )  # fmt: skip
    _with_http_telemetry(config, labels, plan)
    route_config = config["route_config"]
    if not tls:  # a peer that did not prove itself: its headers are dropped unread
        route_config["request_headers_to_remove"] = [
            *route_config.get("request_headers_to_remove", []),
            *(header for _, header, _ in peer.KEYS),
        ]
    else:
        config["http_filters"] = [_header_filter("request"), *config["http_filters"]]
        route_config["response_headers_to_add"] = [
            *route_config.get("response_headers_to_add", []),
            *_own_headers(),
        ]
    return hcm


def outbound_tcp(proxy: dict[str, Any], plan: SidePlan = NO_PLAN) -> dict[str, Any]:
    """A service listener's TCP proxy, counting `reporter="source"` connections and bytes; the
    destination workload comes from the endpoint's metadata (TCP carries no headers)."""
    labels = _labels(
        "source",
        source=_own(), source_principal="%UPSTREAM_LOCAL_URI_SAN%",
        destination=_upstream_host(), destination_principal="%UPSTREAM_PEER_URI_SAN%",
        service=(_cluster("service"), _cluster("service_name"), _cluster("service_namespace")),
        protocol="tcp",
        security=f"%METADATA(UPSTREAM_HOST:{METADATA_NAMESPACE}:connection_security_policy)%",
        http=False,
    )  # fmt: skip
    return _with_tcp_loggers(proxy, labels, plan)


def inbound_tcp(proxy: dict[str, Any], *, service: str, tls: bool,
                plan: SidePlan = NO_PLAN) -> dict[str, Any]:  # fmt: skip
    """An inbound chain's TCP proxy, counting `reporter="destination"` connections and bytes;
    over mTLS the client's workload comes from its certificate (`peer_certificate_filter`,
    which the chain runs before this proxy)."""
    labels = _labels(
        "destination",
        source=_from_certificate() if tls else _unknown(),
        source_principal="%DOWNSTREAM_PEER_URI_SAN%" if tls else peer.UNKNOWN,
        destination=_own(),
        destination_principal="%DOWNSTREAM_LOCAL_URI_SAN%" if tls else peer.UNKNOWN,
        service=_service_labels(service),
        protocol="tcp",
        security=MUTUAL_TLS if tls else NO_TLS,
        http=False,
    )  # fmt: skip
    if tls:
        # The opened series is counted when the app's connection is up: only after the client's
        # handshake does Envoy know its certificate (principal and workload), so connect then,
        # or that series would carry empty peer labels its closed series does not.
        # Envoy requires a bound on what it buffers from the client until the app's connection
        # is up (the per-connection buffer limit's default).
        proxy["typed_config"]["upstream_connect_mode"] = "ON_DOWNSTREAM_TLS_HANDSHAKE"
        proxy["typed_config"]["max_early_data_bytes"] = EARLY_DATA_BYTES
    return _with_tcp_loggers(proxy, labels, plan)


def _with_tcp_loggers(proxy: dict[str, Any], labels: list[tuple[str, str]],
                      plan: SidePlan) -> dict[str, Any]:  # fmt: skip
    config: dict[str, Any] = proxy["typed_config"]
    config["access_log"] = [*config.get("access_log", []), *_tcp_loggers(labels, plan)]
    config["access_log_options"] = {"flush_access_log_on_connected": True}
    return proxy
