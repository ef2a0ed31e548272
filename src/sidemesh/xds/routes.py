"""VirtualService → the routes of a service's outbound listener, in Envoy's JSON shape.

Pure functions of validated objects (`api.networking`): generators never re-validate. The
routes' canonical JSON keys the memo in `cache.py`, so a VirtualService change rebuilds that
host's listener and nothing else.

Istio's translation (pilot/pkg/networking/core/route), for sidecars: every `http` rule's
matches become routes, in order, with nothing appended (a request no rule matches is answered
404 by Envoy, as in Istio); destinations become `outbound|PORT|SUBSET|HOST` clusters; a rule
without `retries` gets Istio's default retry policy; faults are per-route configuration of the
fault filter, which precedes the router.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sidemesh.api.networking import Resource, VirtualService
from sidemesh.api.networking.common import Destination, Percent, StringMatch
from sidemesh.api.networking.virtual_service import (
    MESH_GATEWAY,
    Headers,
    HTTPFaultInjection,
    HTTPMatchRequest,
    HTTPRetry,
    HTTPRoute,
    L4MatchAttributes,
    RouteDestination,
)
from sidemesh.xds import cluster_policy
from sidemesh.xds.envoy_json import canonical, duration, typed
from sidemesh.xds.model import Service, is_http, resolve_host
from sidemesh.xds.resource_names import subset_cluster_name
from sidemesh.xds.scoping import Scope

FAULT_FILTER = "envoy.filters.http.fault"
# Istio's retry policy for a route whose rule says nothing about retries.
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
DEFAULT_RETRY_ATTEMPTS = 2
# Istio's: a retry prefers another endpoint than the ones already tried.
RETRY_OTHER_HOSTS: Mapping[str, Any] = {
    "retry_host_predicate": [{
        "name": "envoy.retry_host_predicates.previous_hosts",
        "typed_config": typed(
            "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
        ),
    }],
    "host_selection_retry_max_attempts": 5,
}  # fmt: skip


def listener_routes(scope: Scope, service: Service, port: int) -> str:
    """What a service listener's routes depend on, as its memo key: "" for the default. For
    an opaque TCP port: its filter chains from the VirtualService's `tls`/`tcp` rules."""
    service_port = service.port(port)
    if service_port is not None and not is_http(service_port.protocol):
        chains = l4_chains(scope, service, port)
        return "" if chains is None else canonical(chains)
    routes = http_routes(scope, service, port)
    return "" if routes is None else canonical(routes)


def fraction(percent: Percent | None) -> dict[str, Any]:
    """Istio's Percent (0-100, fractional) as Envoy's FractionalPercent; unset means all."""
    value = 100.0 if percent is None else percent.value
    return {"numerator": round(value * 10_000), "denominator": "MILLION"}


def http_routes(scope: Scope, service: Service, port: int) -> list[dict[str, Any]] | None:
    """The routes of a service port from its VirtualService, or None (the default route).
    Without one, a DestinationRule's consistentHash still needs the default route to carry
    its hash policy."""
    resource = scope.virtual_service_for(service.hostname)
    if resource is None or not resource.spec.http:
        found = cluster_policy.consistent_hash(scope, service, port)
        hashing = cluster_policy.hash_policy(found) if found is not None else []
        if not hashing:
            return None
        cluster = subset_cluster_name(port, "", service.hostname)
        action = {"cluster": cluster, "timeout": "0s", "hash_policy": hashing}
        return [{"match": {"prefix": "/"}, "route": action}]
    namespace = resource.namespace
    routes: list[dict[str, Any]] = []
    for index, rule in enumerate(resource.spec.http):
        matches = [m for m in rule.match if _applies(m, port, scope)] if rule.match else [None]
        if rule.match and not matches:
            continue  # every match is for another port, a gateway or another source
        for match in matches:
            routes.append(_route(scope, namespace, rule, match, port, index))
    return routes


def _applies(match: HTTPMatchRequest, port: int, scope: Scope) -> bool:
    """Whether a match can select requests through this listener of this view's proxies:
    `sourceLabels`/`sourceNamespace` are evaluated for the requesting proxy (its view)."""
    if match.port is not None and match.port != port:
        return False
    if match.gateways and MESH_GATEWAY not in match.gateways:
        return False
    return scope.source_matches(match)


def _route(
    scope: Scope,
    namespace: str,
    rule: HTTPRoute,
    match: HTTPMatchRequest | None,
    port: int,
    index: int,
) -> dict[str, Any]:
    route: dict[str, Any] = {"name": rule.name or f"route-{index}", "match": _match(match)}
    if rule.direct_response is not None:
        body = rule.direct_response.body
        route["direct_response"] = {"status": rule.direct_response.status}
        if body is not None and body.string is not None:
            route["direct_response"]["body"] = {"inline_string": body.string}
    elif rule.redirect is not None:
        redirect: dict[str, Any] = {}
        if rule.redirect.uri:
            redirect["path_redirect"] = rule.redirect.uri
        if rule.redirect.authority:
            redirect["host_redirect"] = rule.redirect.authority
        if rule.redirect.port:
            redirect["port_redirect"] = rule.redirect.port
        if rule.redirect.scheme:
            redirect["scheme_redirect"] = rule.redirect.scheme
        codes = {301: "MOVED_PERMANENTLY", 302: "FOUND", 303: "SEE_OTHER",
                 307: "TEMPORARY_REDIRECT", 308: "PERMANENT_REDIRECT"}  # fmt: skip
        redirect["response_code"] = codes.get(rule.redirect.redirect_code or 301,
                                              "MOVED_PERMANENTLY")  # fmt: skip
        route["redirect"] = redirect
    else:
        route["route"] = _action(scope, namespace, rule, match, port)
    operations = _header_operations(rule.headers) if rule.headers is not None else {}
    if len(rule.route) == 1 and rule.route[0].headers is not None:
        # One destination: its header operations are the route's (Istio merges them).
        for key, values in _header_operations(rule.route[0].headers).items():
            operations[key] = [*operations.get(key, []), *values]
    route.update(operations)
    if rule.fault is not None:
        route["typed_per_filter_config"] = {FAULT_FILTER: fault_config(rule.fault)}
    return route


def _string_match(match: StringMatch) -> dict[str, Any]:
    if match.exact is not None:
        return {"exact": match.exact}
    if match.prefix is not None:
        return {"prefix": match.prefix}
    if match.regex is not None:
        return {"safe_regex": {"regex": match.regex}}
    return {}


def _header_matcher(name: str, match: StringMatch, *, invert: bool = False) -> dict[str, Any]:
    matcher: dict[str, Any] = {"name": name}
    string = _string_match(match)
    if string:
        matcher["string_match"] = string
    else:
        matcher["present_match"] = True  # an empty match: the header is present
    if invert:
        matcher["invert_match"] = True
    return matcher


def _match(match: HTTPMatchRequest | None) -> dict[str, Any]:
    found: dict[str, Any] = {"prefix": "/"}
    if match is None:
        return found
    uri = match.uri
    if uri is not None and uri.exact is not None:
        found = {"path": uri.exact}
    elif uri is not None and uri.prefix is not None:
        found = {"prefix": uri.prefix}
    elif uri is not None and uri.regex is not None:
        found = {"safe_regex": {"regex": uri.regex}}
    if match.ignore_uri_case:
        found["case_sensitive"] = False
    headers = [_header_matcher(name, value) for name, value in sorted(match.headers.items())]
    headers += [_header_matcher(name, value, invert=True)
                for name, value in sorted(match.without_headers.items())]  # fmt: skip
    for pseudo, value in ((":method", match.method), (":authority", match.authority),
                          (":scheme", match.scheme)):  # fmt: skip
        if value is not None:
            headers.append(_header_matcher(pseudo, value))
    if headers:
        found["headers"] = headers
    if match.query_params:
        found["query_parameters"] = [
            {"name": name, **({"string_match": _string_match(value)} if _string_match(value)
                              else {"present_match": True})}
            for name, value in sorted(match.query_params.items())
        ]  # fmt: skip
    return found


def _action(
    scope: Scope,
    namespace: str,
    rule: HTTPRoute,
    match: HTTPMatchRequest | None,
    port: int,
) -> dict[str, Any]:
    action: dict[str, Any] = {"timeout": duration(rule.timeout) if rule.timeout else "0s"}
    weighted = []
    hashes = []
    for destination in rule.route:
        name, hashing = _destination(scope, namespace, destination.destination, port)
        headers = _header_operations(destination.headers) if destination.headers else {}
        weighted.append({"name": name, "weight": destination.weight, **headers})
        hashes.append(hashing)
    if len(weighted) == 1:
        action["cluster"] = weighted[0]["name"]
    elif weighted:
        # Relative weights; a zero-weight destination gets nothing (validation refuses a
        # total of zero).
        action["weighted_clusters"] = {"clusters": [w for w in weighted if w["weight"]]}
    if hashes and hashes[0] and all(h == hashes[0] for h in hashes):
        # The destinations' DestinationRule consistentHash (one route, one hash key).
        action["hash_policy"] = hashes[0]
    if rule.mirror is not None:
        mirror, _ = _destination(scope, namespace, rule.mirror, port)
        action["request_mirror_policies"] = [{
            "cluster": mirror,
            "runtime_fraction": {"default_value": fraction(rule.mirror_percentage)},
            "trace_sampled": False,
        }]  # fmt: skip
    if rule.rewrite is not None:
        if rule.rewrite.uri is not None:
            action["prefix_rewrite"] = rule.rewrite.uri
        if rule.rewrite.authority is not None:
            action["host_rewrite_literal"] = rule.rewrite.authority
    policy = retry_policy(rule.retries)
    if policy is not None:
        action["retry_policy"] = policy
    return action


def l4_chains(scope: Scope, service: Service, port: int) -> list[dict[str, Any]] | None:
    """The filter chains of an opaque TCP service port from its VirtualService, or None (one
    chain to the service). Istio's order: `tls` rules first, one chain per rule matching by
    SNI (`sniHosts`; a connection no rule names is closed), else the first `tcp` rule whose
    match holds (port, source) splits connections by weight."""
    resource = scope.virtual_service_for(service.hostname)
    if resource is None:
        return None
    namespace = resource.namespace
    chains: list[dict[str, Any]] = []
    taken: set[str] = set()
    for index, tls_rule in enumerate(resource.spec.tls):
        names = sorted({sni for m in tls_rule.match if _l4_applies(m, port, scope)
                        for sni in m.sni_hosts} - taken)  # fmt: skip
        if names:
            taken.update(names)
            proxy = route_tcp_proxy(scope, namespace, tls_rule.route, port)
            chains.append({"name": f"tls-{index}", "filters": [proxy],
                           "filter_chain_match": {"server_names": names}})  # fmt: skip
    if chains:
        return chains
    for index, tcp_rule in enumerate(resource.spec.tcp):
        if not tcp_rule.match or any(_l4_applies(m, port, scope) for m in tcp_rule.match):
            proxy = route_tcp_proxy(scope, namespace, tcp_rule.route, port)
            return [{"name": f"tcp-{index}", "filters": [proxy]}]
    return None


def _l4_applies(match: L4MatchAttributes, port: int, scope: Scope) -> bool:
    if match.port is not None and match.port != port:
        return False
    if match.gateways and MESH_GATEWAY not in match.gateways:
        return False
    return scope.source_matches(match)


def route_tcp_proxy(
    scope: Scope, namespace: str, destinations: tuple[RouteDestination, ...], port: int
) -> dict[str, Any]:
    """A TCP proxy to a `tls`/`tcp` rule's destinations, split by their relative weights
    (sidecars' opaque ports here, gateways' passthrough and TCP servers in
    `xds.gateway_passthrough`)."""
    clusters = [(_destination(scope, namespace, d.destination, port)[0], d.weight)
                for d in destinations]  # fmt: skip
    config: dict[str, Any] = {"stat_prefix": clusters[0][0]}
    if len(clusters) == 1:
        config["cluster"] = clusters[0][0]
    else:
        weighted = [{"name": name, "weight": weight} for name, weight in clusters if weight]
        config["weighted_clusters"] = {"clusters": weighted}
    return {"name": "envoy.filters.network.tcp_proxy",
            "typed_config": typed("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                                  **config)}  # fmt: skip


def _destination(
    scope: Scope, namespace: str, destination: Destination, port: int
) -> tuple[str, list[dict[str, Any]]]:
    """A destination's cluster `outbound|PORT|SUBSET|HOST`, and the hash policy its
    DestinationRule's consistentHash asks routes to it for ([] when none)."""
    host = resolve_host(destination.host, namespace)
    target = scope.snapshot.services_by_host.get(host)
    if destination.port is not None:
        number = destination.port.number
    elif target is not None and len(target.ports) == 1:
        number = target.ports[0].port  # Istio: a single-port service needs no port
    else:
        number = port
    subset = destination.subset or ""
    found = None if target is None else cluster_policy.consistent_hash(scope, target, number,
                                                                        subset)  # fmt: skip
    hashing = cluster_policy.hash_policy(found) if found is not None else []
    return subset_cluster_name(number, subset, host), hashing


def retry_policy(retries: HTTPRetry | None) -> dict[str, Any] | None:
    """Istio's: no `retries` → 2 attempts on connection failures and 503; attempts 0 → none;
    HTTP status codes in `retryOn` become retriable status codes."""
    if retries is None:
        return {"retry_on": DEFAULT_RETRY_ON, "num_retries": DEFAULT_RETRY_ATTEMPTS,
                "retriable_status_codes": [503], **RETRY_OTHER_HOSTS}  # fmt: skip
    if retries.attempts <= 0:
        return None
    conditions, codes = [], []
    for part in (retries.retry_on or DEFAULT_RETRY_ON).split(","):
        part = part.strip()
        if part.isdigit():
            codes.append(int(part))
        elif part:
            conditions.append(part)
    if codes and "retriable-status-codes" not in conditions:
        conditions.append("retriable-status-codes")
    policy: dict[str, Any] = {
        "retry_on": ",".join(conditions), "num_retries": retries.attempts, **RETRY_OTHER_HOSTS,
    }  # fmt: skip
    if codes or retries.retry_on is None:
        policy["retriable_status_codes"] = codes or [503]
    if retries.per_try_timeout:
        policy["per_try_timeout"] = duration(retries.per_try_timeout)
    return policy


def fault_config(fault: HTTPFaultInjection) -> dict[str, Any]:
    """Per-route configuration of the fault filter (HTTPFault)."""
    config: dict[str, Any] = {}
    if fault.delay is not None and fault.delay.fixed_delay:
        config["delay"] = {"fixed_delay": duration(fault.delay.fixed_delay),
                           "percentage": fraction(fault.delay.percentage)}  # fmt: skip
    if fault.abort is not None and fault.abort.http_status is not None:
        config["abort"] = {"http_status": fault.abort.http_status,
                           "percentage": fraction(fault.abort.percentage)}  # fmt: skip
    return typed("envoy.extensions.filters.http.fault.v3.HTTPFault", **config)


def _header_operations(headers: Headers) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for direction, operations in (("request", headers.request), ("response", headers.response)):
        if operations is None:
            continue
        to_add = [
            {"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            for k, v in sorted(operations.set.items())
        ] + [
            {"header": {"key": k, "value": v}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}
            for k, v in sorted(operations.add.items())
        ]
        if to_add:
            found[f"{direction}_headers_to_add"] = to_add
        if operations.remove:
            found[f"{direction}_headers_to_remove"] = list(operations.remove)
    return found


def gateway_routes(
    scope: Scope,
    resource: Resource[VirtualService],
    port: int,
    applies: Callable[[HTTPMatchRequest], bool],
) -> list[dict[str, Any]]:
    """The routes a VirtualService bound to a Gateway gives one of its servers (`xds.gateway`):
    Istio's translation, with `applies` deciding which matches select requests there (their
    `gateways`, `port` and source, judged for the gateway proxy)."""
    routes: list[dict[str, Any]] = []
    for index, rule in enumerate(resource.spec.http):
        matches = [m for m in rule.match if applies(m)] if rule.match else [None]
        if rule.match and not matches:
            continue
        routes += [_route(scope, resource.namespace, rule, m, port, index) for m in matches]
    return routes
