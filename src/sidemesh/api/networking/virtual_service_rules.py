"""Istio's rules for a VirtualService (what the models' field types cannot say): hosts,
gateways, exactly one action per HTTP route, weights, redirects, rewrites, retries, faults,
SNI matches and exportTo."""

from __future__ import annotations

from collections.abc import Sequence

from sidemesh.api.networking.common import (
    Issues,
    check_destination,
    check_export_to,
    check_header_names,
    check_host,
    check_labels,
    check_regex,
    check_string_match,
    is_dns_label,
    is_ip,
    is_ip_or_cidr,
)
from sidemesh.api.networking.virtual_service import (
    GRPC_STATUSES,
    MESH_GATEWAY,
    RETRY_ON,
    HeaderOperations,
    Headers,
    HTTPFaultInjection,
    HTTPMatchRequest,
    HTTPRedirect,
    HTTPRetry,
    HTTPRewrite,
    HTTPRoute,
    HTTPRouteDestination,
    L4MatchAttributes,
    RouteDestination,
    TLSRoute,
    VirtualService,
)


def check_virtual_service(spec: VirtualService, issues: Issues) -> None:
    bound_to_gateway = bool(spec.gateways) and MESH_GATEWAY not in spec.gateways
    if not spec.hosts:
        issues.add("spec.hosts", "at least one host is required")  # delegates: not supported
    for index, host in enumerate(spec.hosts):
        path = f"spec.hosts[{index}]"
        if host == "*" and not bound_to_gateway:
            issues.add(path, "wildcard host * is not allowed for virtual services bound to mesh")
        elif not (bound_to_gateway and is_ip(host)):
            check_host(issues, path, host)
        if host in spec.hosts[:index]:
            issues.add(path, f"duplicate host {host!r}")
    _check_gateway_names(issues, "spec.gateways", spec.gateways)
    if not (spec.http or spec.tcp or spec.tls):
        issues.add("spec", "http, tcp or tls must be provided in virtual service")
    for index, http in enumerate(spec.http):
        _check_http_route(issues, f"spec.http[{index}]", http)
    for index, tls in enumerate(spec.tls):
        _check_tls_route(issues, f"spec.tls[{index}]", tls, spec.hosts)
    for index, tcp in enumerate(spec.tcp):
        path = f"spec.tcp[{index}]"
        for number, match in enumerate(tcp.match):
            _check_l4_match(issues, f"{path}.match[{number}]", match)
        _check_route_destinations(issues, path, tcp.route, "TCP")
    check_export_to(issues, "spec.exportTo", spec.export_to)


def _check_gateway_names(issues: Issues, path: str, gateways: Sequence[str]) -> None:
    for index, gateway in enumerate(gateways):
        namespace, sep, name = gateway.partition("/")
        where = f"{path}[{index}]"
        if not sep:
            if gateway != MESH_GATEWAY and not all(is_dns_label(p) for p in gateway.split(".")):
                issues.add(where, f"invalid gateway name {gateway!r}")
            continue
        if not is_dns_label(namespace):
            issues.add(where, f"invalid value for namespace: {namespace!r}")
        if not is_dns_label(name):
            issues.add(where, f"invalid value for gateway name: {name!r}")


def _check_http_route(issues: Issues, path: str, http: HTTPRoute) -> None:
    actions = [
        n
        for n, v in (
            ("route", http.route),
            ("redirect", http.redirect),
            ("directResponse", http.direct_response),
        )
        if v
    ]
    if not actions:
        issues.add(path, "one of route, redirect or directResponse is required")
    elif len(actions) > 1:
        issues.add(path, f"only one of route, redirect or directResponse may be set ({actions})")
    # Istio's conflict matrix: a redirect or direct response is not forwarded, so it takes no
    # rewrite and no fault.
    for action, value in (("redirect", http.redirect), ("directResponse", http.direct_response)):
        if value is None:
            continue
        for forbidden in ("rewrite", "fault"):
            if getattr(http, forbidden) is not None:
                issues.add(f"{path}.{forbidden}", f"{forbidden} cannot be used with {action}")
    for index, match in enumerate(http.match):
        _check_http_match(issues, f"{path}.match[{index}]", match)
    _check_route_destinations(issues, path, http.route, "HTTP")
    for index, destination in enumerate(http.route):
        if destination.headers is not None:
            _check_headers(issues, f"{path}.route[{index}].headers", destination.headers)
    if http.headers is not None:
        _check_headers(issues, f"{path}.headers", http.headers)
    if http.redirect is not None:
        _check_redirect(issues, f"{path}.redirect", http.redirect)
    if http.direct_response is not None:
        status = http.direct_response.status
        if not 200 <= status <= 599:
            issues.add(f"{path}.directResponse.status", f"HTTP status {status} is not in 200-599")
    if http.rewrite is not None:
        _check_rewrite(issues, f"{path}.rewrite", http.rewrite)
    if http.retries is not None:
        _check_retries(issues, f"{path}.retries", http.retries)
    if http.fault is not None:
        _check_fault(issues, f"{path}.fault", http.fault)
    if http.mirror is not None:
        check_destination(issues, f"{path}.mirror", http.mirror)
    elif http.mirror_percentage is not None:
        issues.add(f"{path}.mirrorPercentage", "mirrorPercentage requires mirror")


def _check_http_match(issues: Issues, path: str, match: HTTPMatchRequest) -> None:
    for name in ("uri", "scheme", "method", "authority"):
        check_string_match(issues, f"{path}.{name}", getattr(match, name), required=True)
    for field_name, mapping in (
        ("headers", match.headers),
        ("queryParams", match.query_params),
        ("withoutHeaders", match.without_headers),
    ):
        for key, value in mapping.items():
            check_string_match(issues, f"{path}.{field_name}.{key}", value)
    check_header_names(issues, f"{path}.headers", match.headers)
    check_header_names(issues, f"{path}.withoutHeaders", match.without_headers)
    check_labels(issues, f"{path}.sourceLabels", match.source_labels)
    _check_gateway_names(issues, f"{path}.gateways", match.gateways)


def _check_l4_match(issues: Issues, path: str, match: L4MatchAttributes) -> None:
    for index, subnet in enumerate(match.destination_subnets):
        if not is_ip_or_cidr(subnet):
            issues.add(f"{path}.destinationSubnets[{index}]", f"{subnet!r} is not an IP or CIDR")
    check_labels(issues, f"{path}.sourceLabels", match.source_labels)
    _check_gateway_names(issues, f"{path}.gateways", match.gateways)


def _check_tls_route(issues: Issues, path: str, tls: TLSRoute, hosts: Sequence[str]) -> None:
    if not tls.match:
        issues.add(f"{path}.match", "TLS route must have at least one match condition")
    for index, match in enumerate(tls.match):
        where = f"{path}.match[{index}]"
        _check_l4_match(issues, where, match)
        if not match.sni_hosts:
            issues.add(f"{where}.sniHosts", "TLS match must have at least one SNI host")
        for number, sni in enumerate(match.sni_hosts):
            check_host(issues, f"{where}.sniHosts[{number}]", sni)
            if not any(_host_within(sni, host) for host in hosts):
                issues.add(
                    f"{where}.sniHosts[{number}]",
                    f"SNI host {sni!r} is not a subset of any virtual service host",
                )
    _check_route_destinations(issues, path, tls.route, "TLS")


def _host_within(sni: str, host: str) -> bool:
    """Istio's SubsetOf: `a.b.com` within `*.b.com`, anything within `*`."""
    if host == "*" or sni == host:
        return True
    if host.startswith("*"):
        return sni.endswith(host[1:])
    return False


def _check_route_destinations(
    issues: Issues,
    path: str,
    route: Sequence[HTTPRouteDestination | RouteDestination],
    protocol: str,
) -> None:
    if protocol != "HTTP" and not route:
        issues.add(f"{path}.route", f"{protocol} route is required")
    for index, destination in enumerate(route):
        check_destination(issues, f"{path}.route[{index}].destination", destination.destination)
    # Istio (validateRouteDestinations): weights are relative; with more than one destination
    # they must not all be 0 (older Istio releases required a sum of exactly 100).
    if len(route) > 1 and sum(d.weight for d in route) == 0:
        issues.add(f"{path}.route", "total destination weight = 0")


def _check_headers(issues: Issues, path: str, headers: Headers) -> None:
    for side in ("request", "response"):
        operations: HeaderOperations | None = getattr(headers, side)
        if operations is None:
            continue
        check_header_names(issues, f"{path}.{side}.set", operations.set)
        check_header_names(issues, f"{path}.{side}.add", operations.add)
        for index, name in enumerate(operations.remove):
            check_header_names(issues, f"{path}.{side}.remove[{index}]", [name])


def _check_redirect(issues: Issues, path: str, redirect: HTTPRedirect) -> None:
    if not (
        redirect.uri
        or redirect.authority
        or redirect.port
        or redirect.derive_port
        or redirect.scheme
    ):
        issues.add(path, "redirect must specify uri, authority, scheme, port or derivePort")
    if redirect.port is not None and redirect.derive_port is not None:
        issues.add(path, "only one of port or derivePort may be set")
    code = redirect.redirect_code
    if code is not None and code != 0 and not 300 <= code <= 399:
        issues.add(f"{path}.redirectCode", f"{code} is not a valid redirect code, must be 3xx")
    if redirect.scheme is not None and redirect.scheme not in ("http", "https"):
        issues.add(f"{path}.scheme", 'invalid redirect scheme, must be "http" or "https"')


def _check_rewrite(issues: Issues, path: str, rewrite: HTTPRewrite) -> None:
    if rewrite.uri is not None and rewrite.uri_regex_rewrite is not None:
        issues.add(path, "rewrite may only contain one of uri or uriRegexRewrite")
    if rewrite.uri is None and rewrite.uri_regex_rewrite is None and rewrite.authority is None:
        issues.add(path, "rewrite must specify at least one of uri, uriRegexRewrite or authority")
    if rewrite.uri_regex_rewrite is not None:
        check_regex(issues, f"{path}.uriRegexRewrite.match", rewrite.uri_regex_rewrite.match)


def _check_retries(issues: Issues, path: str, retries: HTTPRetry) -> None:
    if retries.attempts < 0:
        issues.add(f"{path}.attempts", "attempts cannot be negative")
    elif retries.attempts == 0 and (
        retries.per_try_timeout or retries.retry_on or retries.retry_remote_localities is not None
    ):
        issues.add(path, "http retry policy configured when attempts are set to 0 (disabled)")
    for condition in (retries.retry_on or "").split(",") if retries.retry_on else ():
        condition = condition.strip()
        if condition not in RETRY_ON and not (condition.isdigit() and 100 <= int(condition) < 600):
            issues.add(f"{path}.retryOn", f"{condition!r} is not a valid retryOn policy")


def _check_fault(issues: Issues, path: str, fault: HTTPFaultInjection) -> None:
    if fault.delay is None and fault.abort is None:
        issues.add(path, "HTTP fault injection must have an abort and/or a delay")
    if fault.delay is not None and fault.delay.fixed_delay is None:
        issues.add(f"{path}.delay.fixedDelay", "fixedDelay is required")
    abort = fault.abort
    if abort is not None:
        if (abort.http_status is None) == (abort.grpc_status is None):
            issues.add(f"{path}.abort", "exactly one of httpStatus or grpcStatus is required")
        if abort.http_status is not None and not 200 <= abort.http_status <= 599:
            issues.add(
                f"{path}.abort.httpStatus",
                f"HTTP status {abort.http_status} is not in range 200-599",
            )
        if abort.grpc_status is not None and abort.grpc_status not in GRPC_STATUSES:
            issues.add(
                f"{path}.abort.grpcStatus", f"gRPC status {abort.grpc_status!r} is not supported"
            )
