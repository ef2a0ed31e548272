"""VirtualService: how requests to a host are routed (Istio's `networking.istio.io`
VirtualService, the fields sidemesh acts on); its rules are in `virtual_service_rules`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from sidemesh.api.networking.common import (
    Destination,
    Duration,
    DurationOrZero,
    Model,
    NonNegative,
    Percent,
    PortNumber,
    StringMatch,
)

MESH_GATEWAY = "mesh"
# Envoy's retry_on conditions Istio accepts (besides HTTP status codes).
RETRY_ON = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "envoy-ratelimited",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "http3-post-connect-failure",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)
GRPC_STATUSES = frozenset(
    {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    }
)


class HeaderOperations(Model):
    set: dict[str, str] = Field(default_factory=dict)
    add: dict[str, str] = Field(default_factory=dict)
    remove: tuple[str, ...] = Field(default_factory=tuple)


class Headers(Model):
    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


class HTTPMatchRequest(Model):
    name: str | None = None
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: dict[str, StringMatch] = Field(default_factory=dict)
    port: PortNumber | None = None
    source_labels: dict[str, str] = Field(default_factory=dict, alias="sourceLabels")
    gateways: tuple[str, ...] = Field(default_factory=tuple)
    query_params: dict[str, StringMatch] = Field(default_factory=dict, alias="queryParams")
    ignore_uri_case: bool = Field(False, alias="ignoreUriCase")
    without_headers: dict[str, StringMatch] = Field(default_factory=dict, alias="withoutHeaders")
    source_namespace: str | None = Field(None, alias="sourceNamespace")


class HTTPRouteDestination(Model):
    destination: Destination
    # Relative weights: current Istio no longer requires a sum of 100 (older releases did).
    weight: NonNegative = 0
    headers: Headers | None = None


class RouteDestination(Model):
    destination: Destination
    weight: NonNegative = 0


class HTTPRedirect(Model):
    uri: str | None = None
    authority: str | None = None
    port: PortNumber | None = None
    derive_port: Literal["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"] | None = Field(
        None, alias="derivePort"
    )
    scheme: str | None = None
    redirect_code: int | None = Field(None, alias="redirectCode")


class HTTPBody(Model):
    string: str | None = None
    bytes: str | None = None  # base64, as protobuf's JSON writes bytes


class HTTPDirectResponse(Model):
    status: int
    body: HTTPBody | None = None


class RegexRewrite(Model):
    match: str
    rewrite: str


class HTTPRewrite(Model):
    uri: str | None = None
    authority: str | None = None
    uri_regex_rewrite: RegexRewrite | None = Field(None, alias="uriRegexRewrite")


class HTTPRetry(Model):
    attempts: int = 0
    per_try_timeout: Duration | None = Field(None, alias="perTryTimeout")
    retry_on: str | None = Field(None, alias="retryOn")
    retry_remote_localities: bool | None = Field(None, alias="retryRemoteLocalities")


class FaultDelay(Model):
    fixed_delay: Duration | None = Field(None, alias="fixedDelay")
    percentage: Percent | None = None


class FaultAbort(Model):
    http_status: int | None = Field(None, alias="httpStatus")
    grpc_status: str | None = Field(None, alias="grpcStatus")
    percentage: Percent | None = None


class HTTPFaultInjection(Model):
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None


class HTTPRoute(Model):
    name: str | None = None
    match: tuple[HTTPMatchRequest, ...] = Field(default_factory=tuple)
    route: tuple[HTTPRouteDestination, ...] = Field(default_factory=tuple)
    redirect: HTTPRedirect | None = None
    direct_response: HTTPDirectResponse | None = Field(None, alias="directResponse")
    rewrite: HTTPRewrite | None = None
    timeout: DurationOrZero | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirror_percentage: Percent | None = Field(None, alias="mirrorPercentage")
    # Accepted as Istio writes it; not acted on yet, so not checked beyond being a mapping.
    cors_policy: dict[str, Any] | None = Field(None, alias="corsPolicy")
    headers: Headers | None = None


class L4MatchAttributes(Model):
    destination_subnets: tuple[str, ...] = Field(default_factory=tuple, alias="destinationSubnets")
    port: PortNumber | None = None
    source_labels: dict[str, str] = Field(default_factory=dict, alias="sourceLabels")
    gateways: tuple[str, ...] = Field(default_factory=tuple)
    source_namespace: str | None = Field(None, alias="sourceNamespace")


class TLSMatchAttributes(L4MatchAttributes):
    sni_hosts: tuple[str, ...] = Field(default_factory=tuple, alias="sniHosts")


class TCPRoute(Model):
    match: tuple[L4MatchAttributes, ...] = Field(default_factory=tuple)
    route: tuple[RouteDestination, ...] = Field(default_factory=tuple)


class TLSRoute(Model):
    match: tuple[TLSMatchAttributes, ...] = Field(default_factory=tuple)
    route: tuple[RouteDestination, ...] = Field(default_factory=tuple)


class VirtualService(Model):
    hosts: tuple[str, ...] = Field(default_factory=tuple)
    gateways: tuple[str, ...] = Field(default_factory=tuple)
    http: tuple[HTTPRoute, ...] = Field(default_factory=tuple)
    tls: tuple[TLSRoute, ...] = Field(default_factory=tuple)
    tcp: tuple[TCPRoute, ...] = Field(default_factory=tuple)
    export_to: tuple[str, ...] = Field(default_factory=tuple, alias="exportTo")
