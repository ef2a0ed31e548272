"""DestinationRule → the fields of a service's outbound clusters, in Envoy's JSON shape.

Pure functions of validated objects (`api.networking`). Each cluster of a service port (its
own, and one per subset, `outbound|PORT|SUBSET|HOST`) is planned as a hashable `ClusterPlan`
whose canonical JSON fields key the memo in `cache.py`, so a DestinationRule change rebuilds
that host's clusters and nothing else. Istio's translation
(pilot/pkg/networking/core/cluster_traffic_policy): a subset's policy overrides the rule's
field by field, a port's `portLevelSettings` the rule's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from sidemesh.api.networking.destination_rule import (
    ClientTLS,
    ConnectionPool,
    ConsistentHash,
    LoadBalancer,
    OutlierDetection,
    TrafficPolicy,
)
from sidemesh.xds.envoy_json import canonical, duration
from sidemesh.xds.model import Service
from sidemesh.xds.scoping import Scope

MAX_UINT32 = 4294967295
LB_POLICIES = {
    "ROUND_ROBIN": "ROUND_ROBIN",
    "LEAST_CONN": "LEAST_REQUEST",
    "LEAST_REQUEST": "LEAST_REQUEST",
    "RANDOM": "RANDOM",
}


@dataclass(frozen=True, order=True)
class ClusterPlan:
    """One outbound cluster of a service port: the default one (subset "") or a subset's,
    the labels its endpoints must carry, and the DestinationRule's cluster fields (canonical
    JSON of Envoy fields, "" when none), so a plan is hashable and keys the memo."""

    subset: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    fields: str = ""

    @property
    def cluster_fields(self) -> dict[str, Any]:
        loaded: dict[str, Any] = orjson.loads(self.fields) if self.fields else {}
        return loaded


DEFAULT_PLAN = ClusterPlan()


def cluster_plans(scope: Scope, service: Service, port: int) -> tuple[ClusterPlan, ...]:
    rule = scope.destination_rule_for(service)
    if rule is None:
        return (DEFAULT_PLAN,)
    top = _port_policy(rule.spec.traffic_policy, port)
    plans = [ClusterPlan(fields=_fields(top))]
    for subset in rule.spec.subsets:
        merged = {**top, **{k: v for k, v in _port_policy(subset.traffic_policy, port).items()
                            if v is not None}}  # fmt: skip
        plans.append(ClusterPlan(subset.name, tuple(sorted(subset.labels.items())),
                                 _fields(merged)))  # fmt: skip
    return tuple(plans)


def consistent_hash(
    scope: Scope, service: Service, port: int, subset: str = ""
) -> ConsistentHash | None:
    """The consistentHash load balancer of one cluster (a subset's overrides the rule's, a
    port's the rule's), whose hash policy the routes to that cluster carry."""
    rule = scope.destination_rule_for(service)
    if rule is None:
        return None
    policy = _port_policy(rule.spec.traffic_policy, port)
    for candidate in rule.spec.subsets:
        if subset and candidate.name == subset:
            balancer = _port_policy(candidate.traffic_policy, port).get("load_balancer")
            if balancer is not None:
                policy["load_balancer"] = balancer
    chosen: LoadBalancer | None = policy.get("load_balancer")
    return chosen.consistent_hash if chosen is not None else None


def hash_policy(found: ConsistentHash) -> list[dict[str, Any]]:
    """Envoy's route hash policy for Istio's consistentHash key."""
    if found.http_header_name:
        return [{"header": {"header_name": found.http_header_name}}]
    if found.http_cookie is not None:
        cookie: dict[str, Any] = {"name": found.http_cookie.name}
        if found.http_cookie.path:
            cookie["path"] = found.http_cookie.path
        if found.http_cookie.ttl:
            cookie["ttl"] = duration(found.http_cookie.ttl)
        return [{"cookie": cookie}]
    if found.http_query_parameter_name:
        return [{"query_parameter": {"name": found.http_query_parameter_name}}]
    if found.use_source_ip:
        return [{"connection_properties": {"source_ip": True}}]
    return []


def _port_policy(policy: TrafficPolicy | None, port: int) -> dict[str, Any]:
    """The policy pieces for one port: top-level, overridden field by field by the
    portLevelSettings entry of that port (Istio's precedence)."""
    if policy is None:
        return {}
    found: dict[str, Any] = {
        "load_balancer": policy.load_balancer,
        "connection_pool": policy.connection_pool,
        "outlier_detection": policy.outlier_detection,
        "tls": policy.tls,
    }
    for level in policy.port_level_settings:
        if level.port is not None and level.port.number == port:
            for name in found:
                value = getattr(level, name)
                if value is not None:
                    found[name] = value
    return found


def _fields(policy: Mapping[str, Any]) -> str:
    fields: dict[str, Any] = {}
    balancer: LoadBalancer | None = policy.get("load_balancer")
    if balancer is not None and balancer.simple in LB_POLICIES:
        fields["lb_policy"] = LB_POLICIES[balancer.simple]
    elif balancer is not None and balancer.consistent_hash is not None:
        fields.update(consistent_hash_fields(balancer.consistent_hash))
    pool: ConnectionPool | None = policy.get("connection_pool")
    if pool is not None:
        fields.update(connection_pool_fields(pool))
    outlier: OutlierDetection | None = policy.get("outlier_detection")
    if outlier is not None:
        fields.update(outlier_fields(outlier))
    tls: ClientTLS | None = policy.get("tls")
    if tls is not None and tls.mode is not None:
        fields[UPSTREAM_TLS] = upstream_tls_settings(tls)
    return canonical(fields) if fields else ""


# Not an Envoy field: the DestinationRule's client TLS settings, which `outbound` turns into
# the cluster's transport socket (it knows the peers' identities and the host).
UPSTREAM_TLS = "upstream_tls"


def upstream_tls_settings(tls: ClientTLS) -> dict[str, Any]:
    settings: dict[str, Any] = {"mode": tls.mode}
    for key, value in (("sni", tls.sni), ("ca_certificates", tls.ca_certificates),
                       ("client_certificate", tls.client_certificate),
                       ("private_key", tls.private_key)):  # fmt: skip
        if value:
            settings[key] = value
    if tls.subject_alt_names:
        settings["subject_alt_names"] = list(tls.subject_alt_names)
    if tls.insecure_skip_verify:
        settings["insecure_skip_verify"] = True
    return settings


def consistent_hash_fields(found: ConsistentHash) -> dict[str, Any]:
    """Ring hash (Istio's default for consistentHash) or Maglev, with their sizes."""
    if found.maglev is not None:
        config = {"table_size": found.maglev.table_size} if found.maglev.table_size else {}
        return {"lb_policy": "MAGLEV", "maglev_lb_config": config}
    size = found.ring_hash.minimum_ring_size if found.ring_hash is not None else None
    size = size or found.minimum_ring_size
    config = {"minimum_ring_size": size} if size else {}
    return {"lb_policy": "RING_HASH", "ring_hash_lb_config": config}


def connection_pool_fields(pool: ConnectionPool) -> dict[str, Any]:
    """circuit_breakers (Istio's defaults for what the rule leaves out: unlimited), connect
    timeout, and the HTTP options (`common_http_protocol_options`, merged by `outbound`)."""
    threshold: dict[str, Any] = {
        "max_connections": MAX_UINT32, "max_pending_requests": MAX_UINT32,
        "max_requests": MAX_UINT32, "max_retries": MAX_UINT32, "track_remaining": True,
    }  # fmt: skip
    fields: dict[str, Any] = {}
    common: dict[str, Any] = {}
    if pool.tcp is not None:
        if pool.tcp.max_connections:
            threshold["max_connections"] = pool.tcp.max_connections
        if pool.tcp.connect_timeout:
            fields["connect_timeout"] = duration(pool.tcp.connect_timeout)
        if pool.tcp.max_connection_duration:
            common["max_connection_duration"] = duration(pool.tcp.max_connection_duration)
    if pool.http is not None:
        http = pool.http
        for name, value in (("max_pending_requests", http.http1_max_pending_requests),
                            ("max_requests", http.http2_max_requests),
                            ("max_retries", http.max_retries)):  # fmt: skip
            if value:
                threshold[name] = value
        if http.max_requests_per_connection:
            common["max_requests_per_connection"] = http.max_requests_per_connection
        if http.idle_timeout:
            common["idle_timeout"] = duration(http.idle_timeout)
    fields["circuit_breakers"] = {"thresholds": [threshold]}
    if common:
        fields["common_http_protocol_options"] = common
    return fields


def outlier_fields(outlier: OutlierDetection) -> dict[str, Any]:
    """Istio's outlier detection: only the error kinds the rule names are enforced."""
    detection: dict[str, Any] = {"enforcing_success_rate": 0}
    for count, name, enforcing in (
        (outlier.consecutive_5xx_errors, "consecutive_5xx", "enforcing_consecutive_5xx"),
        (outlier.consecutive_gateway_errors, "consecutive_gateway_failure",
         "enforcing_consecutive_gateway_failure"),
        (outlier.consecutive_local_origin_failures, "consecutive_local_origin_failure",
         "enforcing_consecutive_local_origin_failure"),
    ):  # fmt: skip
        if count is not None:
            detection[name] = count
            detection[enforcing] = 100 if count > 0 else 0
    if outlier.consecutive_5xx_errors is None:
        detection["enforcing_consecutive_5xx"] = 0  # Istio: not asked for, not enforced
    if outlier.split_external_local_origin_errors:
        detection["split_external_local_origin_errors"] = True
    if outlier.interval:
        detection["interval"] = duration(outlier.interval)
    if outlier.base_ejection_time:
        detection["base_ejection_time"] = duration(outlier.base_ejection_time)
    if outlier.max_ejection_percent is not None:
        detection["max_ejection_percent"] = outlier.max_ejection_percent
    fields: dict[str, Any] = {"outlier_detection": detection}
    if outlier.min_health_percent is not None:
        fields["common_lb_config"] = {"healthy_panic_threshold":
                                      {"value": float(outlier.min_health_percent)}}  # fmt: skip
    return fields
