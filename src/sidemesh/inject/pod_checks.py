"""What in a pod will not behave as its owner expects once the sidecar is in: the SM11xx
warnings of `inject.warnings`, from the pod (before injection) and its validated parameters.

Pure: pod and parameters in, warnings out, in a fixed order (the checks' order, then the
containers' order) so that every door shows the same lines.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Mapping
from typing import Any, Final

from sidemesh.api import names
from sidemesh.inject import warnings as w
from sidemesh.inject.params import InjectionParams
from sidemesh.inject.warnings import InjectionWarning

# The ports Envoy and the agent use inside every injected pod (15000 admin ... 15090 metrics).
RESERVED_PORTS: Final = range(names.PORT_ENVOY_ADMIN, names.PORT_PROMETHEUS + 1)

_PROBES: Final = ("readinessProbe", "livenessProbe", "startupProbe")

# A container "appears to use the network" when its command line names a URL or a common
# network client. A heuristic: it only decides whether to warn, never what is injected.
_CALLS_OUT: Final = re.compile(
    r"[a-z][a-z0-9+.-]*://|\b(curl|wget|nc|ncat|telnet|nslookup|dig|git|psql|mysql|"
    r"redis-cli|mongosh|kubectl|aws|gsutil|pip|npm|apt-get|apk)\b"
)

_CAPTURE_ANNOTATIONS: Final = (
    names.ANNOTATION_INCLUDE_OUTBOUND_IP_RANGES,
    names.ANNOTATION_EXCLUDE_OUTBOUND_IP_RANGES,
    names.ANNOTATION_INCLUDE_INBOUND_PORTS,
    names.ANNOTATION_EXCLUDE_INBOUND_PORTS,
    names.ANNOTATION_INCLUDE_OUTBOUND_PORTS,
    names.ANNOTATION_EXCLUDE_OUTBOUND_PORTS,
    names.ANNOTATION_EXCLUDE_INTERFACES,
    names.ANNOTATION_REROUTE_VIRTUAL_INTERFACES,
    names.ANNOTATION_KUBEVIRT_INTERFACES,
    names.ANNOTATION_BYPASS_INIT_CONTAINERS,
    names.ANNOTATION_WHILE_PROXY_DOWN,
)
_READINESS_ANNOTATIONS: Final = (
    names.ANNOTATION_READINESS_INITIAL_DELAY,
    names.ANNOTATION_READINESS_PERIOD,
    names.ANNOTATION_READINESS_FAILURE_THRESHOLD,
)


def pod_warnings(pod: Mapping[str, Any], params: InjectionParams) -> list[InjectionWarning]:
    """Every SM11xx warning for `pod` (as it was before any injection) under `params`."""
    spec = _map(pod.get("spec"))
    annotations = _map(_map(pod.get("metadata")).get("annotations"))
    apps = _app_containers(spec)
    captured = params.capture.mode != "NONE"
    found: list[InjectionWarning] = []
    found += _reserved_ports(apps, params.status_port)
    if captured:
        found += _proxy_uid(spec, apps)
    found += _undeclared_probe_ports(spec, apps)
    found += _ignored_in_mode(annotations, params)
    if captured:
        found += _capture_conflicts(params)
        found += _served_ports_uncaptured(annotations, apps, params)
        found += _cidr_host_bits(annotations)
    found += _kubevirt(annotations)
    found += _bypass(spec, params)
    if captured and not params.native_sidecar:
        found += [
            w.init_outside_mesh(name)
            for name, container in _user_init_containers(spec)
            if _calls_out(container)
            and _run_as_user(spec, container) != names.PROXY_UID
            and name not in params.bypass_init_containers
        ]
        if not params.hold_application:
            found += [w.app_before_proxy(name) for name, c in apps if _calls_out(c)]
    return found


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _app_containers(spec: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    return [
        (c["name"], c)
        for c in _list(spec.get("containers"))
        if isinstance(c.get("name"), str) and c["name"] != names.CONTAINER_PROXY
    ]


def _user_init_containers(spec: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    injected = (names.CONTAINER_INIT, names.CONTAINER_PROXY)
    return [
        (c["name"], c)
        for c in _list(spec.get("initContainers"))
        if isinstance(c.get("name"), str) and c["name"] not in injected
    ]


def _declared_ports(container: Mapping[str, Any]) -> Iterator[int]:
    for port in _list(container.get("ports")):
        number = port.get("containerPort")
        protocol = port.get("protocol", "TCP")
        if isinstance(number, int) and not isinstance(number, bool) and protocol == "TCP":
            yield number


def _reserved_ports(
    apps: list[tuple[str, Mapping[str, Any]]], status_port: int
) -> Iterator[InjectionWarning]:
    for name, container in apps:
        for port in _declared_ports(container):
            if port in RESERVED_PORTS or (status_port and port == status_port):
                yield w.reserved_port(name, port, RESERVED_PORTS.start, RESERVED_PORTS.stop - 1)


def _run_as_user(spec: Mapping[str, Any], container: Mapping[str, Any]) -> Any:
    own = _map(container.get("securityContext")).get("runAsUser")
    return own if own is not None else _map(spec.get("securityContext")).get("runAsUser")


def _proxy_uid(
    spec: Mapping[str, Any], apps: list[tuple[str, Mapping[str, Any]]]
) -> Iterator[InjectionWarning]:
    for index, (name, container) in enumerate(apps):
        own = _map(container.get("securityContext")).get("runAsUser")
        if own == names.PROXY_UID:
            yield w.proxy_uid(name, f"spec.containers[{index}].securityContext.runAsUser")
        elif own is None and _run_as_user(spec, container) == names.PROXY_UID:
            yield w.proxy_uid(name, "spec.securityContext.runAsUser")


def _undeclared_probe_ports(
    spec: Mapping[str, Any], apps: list[tuple[str, Mapping[str, Any]]]
) -> Iterator[InjectionWarning]:
    every = [*_list(spec.get("containers")), *_list(spec.get("initContainers"))]
    declared = {port for c in every for port in _declared_ports(c)}
    for name, container in apps:
        named = {
            p.get("name") for p in _list(container.get("ports")) if isinstance(p.get("name"), str)
        }
        for field in _PROBES:
            probe = _map(container.get(field))
            for handler in ("httpGet", "tcpSocket", "grpc"):
                action = probe.get(handler)
                if not isinstance(action, dict) or action.get("host"):
                    continue  # no such probe, or it checks another host
                port = action.get("port")
                if isinstance(port, str) and not port.isdigit():
                    known = port in named
                else:
                    known = _as_int(port) in declared
                if not known:
                    yield w.undeclared_probe_port(name, field, port)


def _as_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _given(annotations: Mapping[str, Any], name: str) -> bool:
    return isinstance(annotations.get(name), str)


def _ignored_in_mode(
    annotations: Mapping[str, Any], params: InjectionParams
) -> Iterator[InjectionWarning]:
    if params.capture.mode == "NONE":
        for name in _CAPTURE_ANNOTATIONS:
            if _given(annotations, name):
                yield w.ignored_in_mode(
                    name,
                    f'{names.ANNOTATION_INTERCEPTION_MODE} is "NONE", so no capture rules are '
                    "installed",
                )
    elif (
        _given(annotations, names.ANNOTATION_EXCLUDE_INBOUND_PORTS)
        and params.capture.include_inbound_ports != "*"
    ):
        yield w.ignored_in_mode(
            names.ANNOTATION_EXCLUDE_INBOUND_PORTS,
            f'it only applies when {names.ANNOTATION_INCLUDE_INBOUND_PORTS} is "*"; with a '
            "port list, ports not listed are already left alone",
        )
    if not params.status_port:
        for name in _READINESS_ANNOTATIONS:
            if _given(annotations, name):
                yield w.ignored_in_mode(
                    name,
                    f"{names.ANNOTATION_STATUS_PORT} is 0, so the proxy has no readiness probe",
                )
        if _given(annotations, names.ANNOTATION_REWRITE_PROBES) and params.rewrite_probes:
            yield w.ignored_in_mode(
                names.ANNOTATION_REWRITE_PROBES,
                f"{names.ANNOTATION_STATUS_PORT} is 0, so there is no agent to send probes to",
            )
    if params.native_sidecar and params.proxy_config.hold_application_until_proxy_starts:
        yield w.ignored_in_mode(
            names.ANNOTATION_PROXY_CONFIG,
            "holdApplicationUntilProxyStarts has no effect with a native sidecar, which is "
            "always ready before the app containers start",
        )


def _list_items(value: str) -> list[str]:
    return [p for p in value.split(",") if p] if value != "*" else []


def _capture_conflicts(params: InjectionParams) -> Iterator[InjectionWarning]:
    capture = params.capture
    both = [p for p in _list_items(capture.include_outbound_ports)
            if p in _list_items(capture.exclude_outbound_ports)]  # fmt: skip
    if both:
        yield w.capture_conflict(
            names.ANNOTATION_INCLUDE_OUTBOUND_PORTS, names.ANNOTATION_EXCLUDE_OUTBOUND_PORTS, both
        )
    if capture.include_ip_ranges != "*":
        excluded = {_network(item) for item in _list_items(capture.exclude_ip_ranges)}
        ranges = [r for r in _list_items(capture.include_ip_ranges) if _network(r) in excluded]
        if ranges:
            yield w.capture_conflict(
                names.ANNOTATION_INCLUDE_OUTBOUND_IP_RANGES,
                names.ANNOTATION_EXCLUDE_OUTBOUND_IP_RANGES,
                ranges,
            )


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text, strict=False)  # validated by params already


def _served_ports_uncaptured(
    annotations: Mapping[str, Any],
    apps: list[tuple[str, Mapping[str, Any]]],
    params: InjectionParams,
) -> Iterator[InjectionWarning]:
    include = params.capture.include_inbound_ports
    excluded = set(_list_items(params.capture.exclude_inbound_ports))
    included = set(_list_items(include))
    for name, container in apps:
        for port in _declared_ports(container):
            if port in RESERVED_PORTS:
                continue  # SM1101 already says so
            if (
                include == "*"
                and str(port) in excluded
                and _given(annotations, names.ANNOTATION_EXCLUDE_INBOUND_PORTS)
            ):
                yield w.served_port_excluded(names.ANNOTATION_EXCLUDE_INBOUND_PORTS, port, name)
            elif (
                include != "*"
                and str(port) not in included
                and _given(annotations, names.ANNOTATION_INCLUDE_INBOUND_PORTS)
            ):
                yield w.served_port_not_included(names.ANNOTATION_INCLUDE_INBOUND_PORTS, port, name)


def _cidr_host_bits(annotations: Mapping[str, Any]) -> Iterator[InjectionWarning]:
    for name in (
        names.ANNOTATION_INCLUDE_OUTBOUND_IP_RANGES,
        names.ANNOTATION_EXCLUDE_OUTBOUND_IP_RANGES,
    ):
        value = annotations.get(name)
        if not isinstance(value, str) or value.strip() == "*":
            continue
        for item in (part.strip() for part in value.split(",")):
            if "/" not in item:
                continue
            network = _network(item)
            if ipaddress.ip_interface(item).ip != network.network_address:
                yield w.cidr_host_bits(name, item, str(network))


def _kubevirt(annotations: Mapping[str, Any]) -> Iterator[InjectionWarning]:
    if _given(annotations, names.ANNOTATION_KUBEVIRT_INTERFACES):
        yield w.deprecated_kubevirt(
            both=_given(annotations, names.ANNOTATION_REROUTE_VIRTUAL_INTERFACES)
        )


def _bypass(spec: Mapping[str, Any], params: InjectionParams) -> Iterator[InjectionWarning]:
    if not params.bypass_init_containers:
        return
    inits = [name for name, _ in _user_init_containers(spec)]
    for name in params.bypass_init_containers:
        if name not in inits:
            yield w.bypass_unknown(name, inits)
    if params.capture.mode != "NONE" and not params.native_sidecar:
        yield w.ignored_in_mode(
            names.ANNOTATION_BYPASS_INIT_CONTAINERS,
            "with a classic sidecar every init container already runs before "
            f"{names.CONTAINER_INIT} installs capture, outside the mesh",
        )


def _calls_out(container: Mapping[str, Any]) -> bool:
    words = [part for field in ("command", "args") for part in _strings(container.get(field))]
    return bool(_CALLS_OUT.search(" ".join(words)))


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
