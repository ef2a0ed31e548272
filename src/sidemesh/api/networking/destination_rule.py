"""DestinationRule: what happens to traffic for a host after routing (load balancing,
connection pools, outlier detection, TLS, subsets), and Istio's rules for it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from sidemesh.api.networking.common import (
    Duration,
    DurationOrZero,
    Issues,
    Model,
    NonNegative,
    PortSelector,
    TLSMode,
    check_export_to,
    check_host,
    check_labels,
    is_dns_label,
)

SimpleLB = Literal[
    "UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"
]


class HTTPCookie(Model):
    name: str
    path: str | None = None
    ttl: DurationOrZero | None = None


class RingHash(Model):
    minimum_ring_size: NonNegative | None = Field(None, alias="minimumRingSize")


class Maglev(Model):
    table_size: NonNegative | None = Field(None, alias="tableSize")


class ConsistentHash(Model):
    http_header_name: str | None = Field(None, alias="httpHeaderName")
    http_cookie: HTTPCookie | None = Field(None, alias="httpCookie")
    use_source_ip: bool | None = Field(None, alias="useSourceIp")
    http_query_parameter_name: str | None = Field(None, alias="httpQueryParameterName")
    ring_hash: RingHash | None = Field(None, alias="ringHash")
    maglev: Maglev | None = None
    minimum_ring_size: NonNegative | None = Field(None, alias="minimumRingSize")


class Warmup(Model):
    duration: Duration
    minimum_percent: float | None = Field(None, alias="minimumPercent", ge=0, le=100)
    aggression: float | None = Field(None, ge=1)


class LoadBalancer(Model):
    simple: SimpleLB | None = None
    consistent_hash: ConsistentHash | None = Field(None, alias="consistentHash")
    # Accepted as Istio writes it; not acted on yet.
    locality_lb_setting: dict[str, Any] | None = Field(None, alias="localityLbSetting")
    warmup_duration_secs: Duration | None = Field(None, alias="warmupDurationSecs")
    warmup: Warmup | None = None


class TCPKeepalive(Model):
    probes: NonNegative | None = None
    time: Duration | None = None
    interval: Duration | None = None


class TCPSettings(Model):
    max_connections: NonNegative | None = Field(None, alias="maxConnections")
    connect_timeout: Duration | None = Field(None, alias="connectTimeout")
    tcp_keepalive: TCPKeepalive | None = Field(None, alias="tcpKeepalive")
    max_connection_duration: Duration | None = Field(None, alias="maxConnectionDuration")
    idle_timeout: DurationOrZero | None = Field(None, alias="idleTimeout")


class HTTPSettings(Model):
    http1_max_pending_requests: NonNegative | None = Field(None, alias="http1MaxPendingRequests")
    http2_max_requests: NonNegative | None = Field(None, alias="http2MaxRequests")
    max_requests_per_connection: NonNegative | None = Field(None, alias="maxRequestsPerConnection")
    max_retries: NonNegative | None = Field(None, alias="maxRetries")
    idle_timeout: Duration | None = Field(None, alias="idleTimeout")
    h2_upgrade_policy: Literal["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"] | None = Field(
        None, alias="h2UpgradePolicy"
    )
    use_client_protocol: bool | None = Field(None, alias="useClientProtocol")
    max_concurrent_streams: NonNegative | None = Field(None, alias="maxConcurrentStreams")


class ConnectionPool(Model):
    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


class OutlierDetection(Model):
    split_external_local_origin_errors: bool | None = Field(
        None, alias="splitExternalLocalOriginErrors"
    )
    consecutive_local_origin_failures: NonNegative | None = Field(
        None, alias="consecutiveLocalOriginFailures"
    )
    consecutive_gateway_errors: NonNegative | None = Field(None, alias="consecutiveGatewayErrors")
    consecutive_5xx_errors: NonNegative | None = Field(None, alias="consecutive5xxErrors")
    interval: Duration | None = None
    base_ejection_time: Duration | None = Field(None, alias="baseEjectionTime")
    max_ejection_percent: int | None = Field(None, alias="maxEjectionPercent", ge=0, le=100)
    min_health_percent: int | None = Field(None, alias="minHealthPercent", ge=0, le=100)


class ClientTLS(Model):
    mode: TLSMode | None = None
    client_certificate: str | None = Field(None, alias="clientCertificate")
    private_key: str | None = Field(None, alias="privateKey")
    ca_certificates: str | None = Field(None, alias="caCertificates")
    credential_name: str | None = Field(None, alias="credentialName")
    subject_alt_names: tuple[str, ...] = Field(default_factory=tuple, alias="subjectAltNames")
    sni: str | None = None
    insecure_skip_verify: bool | None = Field(None, alias="insecureSkipVerify")


class PortTrafficPolicy(Model):
    port: PortSelector | None = None
    load_balancer: LoadBalancer | None = Field(None, alias="loadBalancer")
    connection_pool: ConnectionPool | None = Field(None, alias="connectionPool")
    outlier_detection: OutlierDetection | None = Field(None, alias="outlierDetection")
    tls: ClientTLS | None = None


class TrafficPolicy(Model):
    load_balancer: LoadBalancer | None = Field(None, alias="loadBalancer")
    connection_pool: ConnectionPool | None = Field(None, alias="connectionPool")
    outlier_detection: OutlierDetection | None = Field(None, alias="outlierDetection")
    tls: ClientTLS | None = None
    port_level_settings: tuple[PortTrafficPolicy, ...] = Field(
        default_factory=tuple, alias="portLevelSettings"
    )


class Subset(Model):
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    traffic_policy: TrafficPolicy | None = Field(None, alias="trafficPolicy")


class MatchLabels(Model):
    """DestinationRule's workloadSelector (istio.type.v1beta1.WorkloadSelector): `matchLabels`,
    unlike Sidecar's and ServiceEntry's `labels`."""

    match_labels: dict[str, str] = Field(default_factory=dict, alias="matchLabels")

    @property
    def labels(self) -> dict[str, str]:
        return self.match_labels


class DestinationRule(Model):
    host: str
    traffic_policy: TrafficPolicy | None = Field(None, alias="trafficPolicy")
    subsets: tuple[Subset, ...] = Field(default_factory=tuple)
    export_to: tuple[str, ...] = Field(default_factory=tuple, alias="exportTo")
    workload_selector: MatchLabels | None = Field(None, alias="workloadSelector")


# --- Istio's rules -------------------------------------------------------------------------


def check_destination_rule(spec: DestinationRule, issues: Issues) -> None:
    check_host(issues, "spec.host", spec.host, allow_full_wildcard=False)
    if spec.traffic_policy is not None:
        _check_traffic_policy(issues, "spec.trafficPolicy", spec.traffic_policy)
    for index, subset in enumerate(spec.subsets):
        path = f"spec.subsets[{index}]"
        if not is_dns_label(subset.name):
            issues.add(f"{path}.name", f"subset name {subset.name!r} is not a DNS-1123 label")
        if subset.name in [s.name for s in spec.subsets[:index]]:
            issues.add(f"{path}.name", f"duplicate subset name {subset.name!r}")
        check_labels(issues, f"{path}.labels", subset.labels)
        if subset.traffic_policy is not None:
            _check_traffic_policy(issues, f"{path}.trafficPolicy", subset.traffic_policy)
    check_export_to(issues, "spec.exportTo", spec.export_to)
    if spec.workload_selector is not None:
        check_labels(issues, "spec.workloadSelector.matchLabels", spec.workload_selector.labels)
    if spec.workload_selector is not None and spec.export_to and spec.export_to != (".",):
        issues.add(
            "spec.exportTo",
            "a DestinationRule with a workloadSelector is exported "
            "only to its own namespace: exportTo must be '.'",
        )


def _check_traffic_policy(issues: Issues, path: str, policy: TrafficPolicy) -> None:
    if policy == TrafficPolicy():
        issues.add(path, "traffic policy must have at least one field")
    _check_port_policy(issues, path, policy)
    ports = []
    for index, level in enumerate(policy.port_level_settings):
        where = f"{path}.portLevelSettings[{index}]"
        if level.port is None:
            issues.add(f"{where}.port", "port is required")
        elif level.port.number in ports:
            issues.add(f"{where}.port.number", f"duplicate port {level.port.number}")
        else:
            ports.append(level.port.number)
        _check_port_policy(issues, where, level)


def _check_port_policy(
    issues: Issues, path: str, policy: TrafficPolicy | PortTrafficPolicy
) -> None:
    if policy.load_balancer is not None:
        _check_load_balancer(issues, f"{path}.loadBalancer", policy.load_balancer)
    pool = policy.connection_pool
    if pool is not None:
        if pool.tcp is None and pool.http is None:
            issues.add(f"{path}.connectionPool", "connection pool must have at least one field")
        http = pool.http
        if http is not None and http.h2_upgrade_policy == "UPGRADE" and http.use_client_protocol:
            issues.add(
                f"{path}.connectionPool.http",
                "useClientProtocol must not be true when h2UpgradePolicy is UPGRADE",
            )
    outlier = policy.outlier_detection
    if (
        outlier is not None
        and outlier.consecutive_local_origin_failures
        and not (outlier.split_external_local_origin_errors)
    ):
        issues.add(
            f"{path}.outlierDetection.consecutiveLocalOriginFailures",
            "requires splitExternalLocalOriginErrors: true",
        )
    if policy.tls is not None:
        _check_tls(issues, f"{path}.tls", policy.tls)


def _check_load_balancer(issues: Issues, path: str, lb: LoadBalancer) -> None:
    if lb.simple is not None and lb.consistent_hash is not None:
        issues.add(path, "only one of simple or consistentHash may be set")
    hashing = lb.consistent_hash
    if hashing is not None:
        keys = [
            k
            for k in (
                "http_header_name",
                "http_cookie",
                "use_source_ip",
                "http_query_parameter_name",
            )
            if getattr(hashing, k) is not None
        ]
        if len(keys) != 1:
            issues.add(
                f"{path}.consistentHash",
                "exactly one of httpHeaderName, httpCookie, "
                "useSourceIp or httpQueryParameterName is required",
            )
        algorithms = [
            a
            for a in (hashing.ring_hash, hashing.maglev, hashing.minimum_ring_size)
            if a is not None
        ]
        if len(algorithms) > 1:
            issues.add(
                f"{path}.consistentHash",
                "only one of minimumRingSize, ringHash or maglev may be set",
            )
        if hashing.maglev is not None:
            size = hashing.maglev.table_size or 0
            if not _is_prime(size) or size >= 5000011:
                issues.add(
                    f"{path}.consistentHash.maglev.tableSize",
                    "tableSize must be a prime number below 5000011",
                )


def _is_prime(number: int) -> bool:
    if number < 2:
        return False
    return all(number % d for d in range(2, int(number**0.5) + 1))


def _check_tls(issues: Issues, path: str, tls: ClientTLS) -> None:
    # Istio's ValidateTLS: ISTIO_MUTUAL uses the mesh's certificates; MUTUAL without a
    # credentialName needs its own.
    if tls.mode == "ISTIO_MUTUAL" and (
        tls.client_certificate or tls.private_key or tls.ca_certificates
    ):
        issues.add(
            path, "cannot specify client certificates or CA certificate if TLS mode is ISTIO_MUTUAL"
        )
    if tls.mode == "MUTUAL" and not tls.credential_name:
        if not tls.client_certificate:
            issues.add(f"{path}.clientCertificate", "client certificate required for mutual tls")
        if not tls.private_key:
            issues.add(f"{path}.privateKey", "private key required for mutual tls")
