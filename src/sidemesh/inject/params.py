"""Everything the sidecar depends on, read from the pod's annotations over the configured
defaults and validated before any template runs. Templates receive these values ready to use,
so a custom template never has to re-implement (or forget) validation."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson
import yaml
from pydantic import ValidationError

from sidemesh.api import kube_names, names
from sidemesh.api.config import InjectorValues, MeshConfig, ProxyConfig
from sidemesh.inject import annotations as ann
from sidemesh.inject.annotations import InvalidAnnotation


@dataclass(frozen=True, slots=True)
class CaptureSettings:
    mode: str
    include_ip_ranges: str
    exclude_ip_ranges: str
    include_inbound_ports: str
    exclude_inbound_ports: str
    include_outbound_ports: str
    exclude_outbound_ports: str
    reroute_virtual_interfaces: str
    exclude_interfaces: str
    while_proxy_down: str = "hold"

    def args(self, status_port: int) -> list[str]:
        """The `istio-init` arguments, in Istio's order and spelling."""
        # Istio's order: the fixed ports, the user's exclusions, then the status port unless
        # the user already listed it.
        excluded_inbound = [str(names.PORT_PROMETHEUS), str(names.PORT_HEALTH)]
        user_excluded = self.exclude_inbound_ports.split(",") if self.exclude_inbound_ports else []
        excluded_inbound += user_excluded
        if status_port and str(status_port) not in user_excluded:
            excluded_inbound.append(str(status_port))
        out = [
            "iptables",
            "-p", str(names.PORT_OUTBOUND_CAPTURE),
            "-z", str(names.PORT_INBOUND_CAPTURE),
            "-u", str(names.PROXY_UID),
            "-m", self.mode,
            "-i", self.include_ip_ranges,
            "-x", self.exclude_ip_ranges,
            "-b", self.include_inbound_ports,
            "-d", ",".join(excluded_inbound),
        ]  # fmt: skip
        if self.include_outbound_ports:
            out += ["-q", self.include_outbound_ports]
        if self.exclude_outbound_ports:
            out += ["-o", self.exclude_outbound_ports]
        if self.reroute_virtual_interfaces:
            out += ["-k", self.reroute_virtual_interfaces]
        if self.exclude_interfaces:
            out += ["-c", self.exclude_interfaces]
        if self.while_proxy_down != "hold":  # the default is left unsaid
            out += ["--while-proxy-down", self.while_proxy_down]
        return out


@dataclass(frozen=True, slots=True)
class InjectionParams:
    templates: tuple[str, ...]
    image: str
    native_sidecar: bool
    proxy_config: ProxyConfig
    hold_application: bool
    capture: CaptureSettings
    status_port: int
    readiness: Mapping[str, int]
    resources: Mapping[str, Mapping[str, str]] | None
    log_level: str
    component_log_level: str
    agent_log_level: str
    rewrite_probes: bool
    merge_metrics: bool
    user_volumes: Mapping[str, Any]
    user_volume_mounts: Mapping[str, Any]
    bootstrap_override: str | None
    bypass_init_containers: tuple[str, ...] = ()


def _bool(annotations: Mapping[str, str], name: str, default: bool) -> bool:
    value = ann.get(annotations, name)
    return default if value is None else ann.parse_bool(name, value)


def native_sidecar_requested(annotations: Mapping[str, str], values: InjectorValues) -> bool:
    """The pod's `sidecar.istio.io/nativeSidecar`, else `sidecarInjectorWebhook.nativeSidecar`."""
    return _bool(
        annotations, names.ANNOTATION_NATIVE_SIDECAR, values.sidecar_injector_webhook.native_sidecar
    )


def _text(annotations: Mapping[str, str], name: str, default: str) -> str:
    value = ann.get(annotations, name)
    return default if value is None else value


def _proxy_config(annotations: Mapping[str, str], mesh: MeshConfig) -> ProxyConfig:
    raw = ann.get(annotations, names.ANNOTATION_PROXY_CONFIG)
    if raw is None or not raw.strip():
        return mesh.default_config
    try:
        overlay = yaml.load(raw, Loader=yaml.CSafeLoader)
    except yaml.YAMLError:
        raise InvalidAnnotation(
            names.ANNOTATION_PROXY_CONFIG, raw, "not valid YAML or JSON"
        ) from None
    if not isinstance(overlay, dict):
        raise InvalidAnnotation(
            names.ANNOTATION_PROXY_CONFIG, raw, "expected a ProxyConfig mapping"
        )
    try:
        return mesh.default_config.overlay(overlay)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise InvalidAnnotation(names.ANNOTATION_PROXY_CONFIG, raw, problems) from None


_RESOURCE_ANNOTATIONS = (
    ("requests", "cpu", names.ANNOTATION_PROXY_CPU),
    ("requests", "memory", names.ANNOTATION_PROXY_MEMORY),
    ("limits", "cpu", names.ANNOTATION_PROXY_CPU_LIMIT),
    ("limits", "memory", names.ANNOTATION_PROXY_MEMORY_LIMIT),
)


def _resources(
    annotations: Mapping[str, str], values: InjectorValues
) -> Mapping[str, Mapping[str, str]] | None:
    chosen = {
        (section, resource, name): value
        for section, resource, name in _RESOURCE_ANNOTATIONS
        if (value := ann.get(annotations, name)) is not None
    }
    if not chosen:
        configured = values.global_.proxy.resources.model_dump(exclude_none=True)
        return {k: v for k, v in configured.items() if v} or None
    # Any annotation replaces the configured resources as a whole (Istio's rule).
    out: dict[str, dict[str, str]] = {}
    amounts: dict[tuple[str, str], Any] = {}
    for (section, resource, name), value in chosen.items():
        amounts[(section, resource)] = (ann.parse_quantity(name, value), name, value)
        out.setdefault(section, {})[resource] = value.strip()
    for resource in ("cpu", "memory"):
        request, limit = amounts.get(("requests", resource)), amounts.get(("limits", resource))
        if request and limit and request[0] > limit[0]:
            raise InvalidAnnotation(
                request[1], request[2], f"request is larger than the limit {limit[1]}={limit[2]}"
            )
    return out


def _json_map(annotations: Mapping[str, str], name: str) -> Mapping[str, Any]:
    raw = ann.get(annotations, name)
    if raw is None:
        return {}
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidAnnotation(name, raw, "expected a JSON object of name to value") from None
    if not isinstance(parsed, dict) or not all(isinstance(v, dict) for v in parsed.values()):
        raise InvalidAnnotation(name, raw, "expected a JSON object whose values are objects")
    return parsed


_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _config_map_name(annotations: Mapping[str, str], name: str) -> str | None:
    raw = ann.get(annotations, name)
    if raw is None:
        return None
    value = raw.strip()
    if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        raise InvalidAnnotation(name, raw, "expected the name of a ConfigMap")
    return value


def _bypass_init_containers(annotations: Mapping[str, str]) -> tuple[str, ...]:
    """Container names (DNS-1123 labels); never the injected ones, which must stay in place."""
    name = names.ANNOTATION_BYPASS_INIT_CONTAINERS
    raw = ann.get(annotations, name)
    if raw is None:
        return ()
    chosen = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    for item in chosen:
        if kube_names.dns1123_label(item):
            raise InvalidAnnotation(name, raw, f'"{item}" is not a container name')
        if item in (names.CONTAINER_INIT, names.CONTAINER_PROXY):
            raise InvalidAnnotation(name, raw, f"{item} is injected and cannot bypass the mesh")
    return chosen


def _virtual_interfaces(annotations: Mapping[str, str]) -> str:
    """`-k`: istio.io/reroute-virtual-interfaces, else the deprecated kubevirtInterfaces (the
    newer annotation wins when both are set, as in Istio)."""
    for name in (names.ANNOTATION_REROUTE_VIRTUAL_INTERFACES, names.ANNOTATION_KUBEVIRT_INTERFACES):
        raw = ann.get(annotations, name)
        if raw is not None:
            return ann.parse_interface_list(name, raw)
    return ""


def _while_proxy_down(annotations: Mapping[str, str]) -> str:
    name = names.ANNOTATION_WHILE_PROXY_DOWN
    raw = ann.get(annotations, name)
    if raw is None:
        return "hold"
    value = raw.strip()
    if value not in names.WHILE_PROXY_DOWN_CHOICES:
        raise InvalidAnnotation(
            name, raw, f"expected one of {', '.join(names.WHILE_PROXY_DOWN_CHOICES)}"
        )
    return value


def _capture(annotations: Mapping[str, str], mode: str, values: InjectorValues) -> CaptureSettings:
    proxy = values.global_.proxy

    def cidrs(name: str, default: str, wildcard: bool) -> str:
        raw = ann.get(annotations, name)
        return ann.parse_cidr_list(name, default if raw is None else raw, allow_wildcard=wildcard)

    def ports(name: str, default: str, wildcard: bool) -> str:
        raw = ann.get(annotations, name)
        return ann.parse_port_list(name, default if raw is None else raw, allow_wildcard=wildcard)

    def interfaces(name: str) -> str:
        raw = ann.get(annotations, name)
        return "" if raw is None else ann.parse_interface_list(name, raw)

    n = names
    return CaptureSettings(
        mode=mode,
        include_ip_ranges=cidrs(
            n.ANNOTATION_INCLUDE_OUTBOUND_IP_RANGES, proxy.include_ip_ranges, True
        ),
        exclude_ip_ranges=cidrs(
            n.ANNOTATION_EXCLUDE_OUTBOUND_IP_RANGES, proxy.exclude_ip_ranges, False
        ),
        include_inbound_ports=ports(
            n.ANNOTATION_INCLUDE_INBOUND_PORTS, proxy.include_inbound_ports, True
        ),
        exclude_inbound_ports=ports(
            n.ANNOTATION_EXCLUDE_INBOUND_PORTS, proxy.exclude_inbound_ports, False
        ),
        include_outbound_ports=ports(
            n.ANNOTATION_INCLUDE_OUTBOUND_PORTS, proxy.include_outbound_ports, False
        ),
        exclude_outbound_ports=ports(
            n.ANNOTATION_EXCLUDE_OUTBOUND_PORTS, proxy.exclude_outbound_ports, False
        ),
        reroute_virtual_interfaces=_virtual_interfaces(annotations),
        exclude_interfaces=interfaces(n.ANNOTATION_EXCLUDE_INTERFACES),
        while_proxy_down=_while_proxy_down(annotations),
    )


def read_params(
    annotations: Mapping[str, str],
    *,
    values: InjectorValues,
    mesh: MeshConfig,
    default_templates: tuple[str, ...],
) -> InjectionParams:
    """Raises InvalidAnnotation for the first annotation that cannot be honoured."""
    proxy_values = values.global_.proxy
    proxy_config = _proxy_config(annotations, mesh)

    mode = _text(annotations, names.ANNOTATION_INTERCEPTION_MODE, proxy_config.interception_mode)
    if mode not in ("REDIRECT", "TPROXY", "NONE"):
        raise InvalidAnnotation(
            names.ANNOTATION_INTERCEPTION_MODE, mode, "expected REDIRECT, TPROXY or NONE"
        )

    status_raw = ann.get(annotations, names.ANNOTATION_STATUS_PORT)
    status_port = (
        proxy_values.status_port
        if status_raw is None
        else ann.parse_port(names.ANNOTATION_STATUS_PORT, status_raw, allow_zero=True)
    )

    def readiness(name: str, default: int, minimum: int) -> int:
        raw = ann.get(annotations, name)
        return default if raw is None else ann.parse_int(name, raw, minimum=minimum)

    templates_raw = ann.get(annotations, names.ANNOTATION_TEMPLATES)
    templates = (
        tuple(t.strip() for t in templates_raw.split(",") if t.strip())
        if templates_raw is not None
        else default_templates
    )
    if not templates:
        raise InvalidAnnotation(
            names.ANNOTATION_TEMPLATES, templates_raw or "", "names no template"
        )

    image = _text(annotations, names.ANNOTATION_PROXY_IMAGE, values.proxy_image()).strip()
    if not image:
        raise InvalidAnnotation(names.ANNOTATION_PROXY_IMAGE, "", "the image cannot be empty")

    log_level_raw = ann.get(annotations, names.ANNOTATION_LOG_LEVEL)
    component_raw = ann.get(annotations, names.ANNOTATION_COMPONENT_LOG_LEVEL)
    agent_raw = ann.get(annotations, names.ANNOTATION_AGENT_LOG_LEVEL)

    return InjectionParams(
        templates=templates,
        image=image,
        native_sidecar=native_sidecar_requested(annotations, values),
        proxy_config=proxy_config,
        hold_application=proxy_config.hold_application_until_proxy_starts
        or proxy_values.hold_application_until_proxy_starts,
        capture=_capture(annotations, mode, values),
        status_port=status_port,
        readiness={
            "initialDelaySeconds": readiness(
                names.ANNOTATION_READINESS_INITIAL_DELAY,
                proxy_values.readiness_initial_delay_seconds,
                0,
            ),
            "periodSeconds": readiness(
                names.ANNOTATION_READINESS_PERIOD, proxy_values.readiness_period_seconds, 1
            ),
            "failureThreshold": readiness(
                names.ANNOTATION_READINESS_FAILURE_THRESHOLD,
                proxy_values.readiness_failure_threshold,
                1,
            ),
        },
        resources=_resources(annotations, values),
        log_level=proxy_values.log_level
        if log_level_raw is None
        else ann.parse_log_level(names.ANNOTATION_LOG_LEVEL, log_level_raw),
        component_log_level=proxy_values.component_log_level
        if component_raw is None
        else ann.parse_scoped_log_levels(names.ANNOTATION_COMPONENT_LOG_LEVEL, component_raw),
        agent_log_level=proxy_values.agent_log_level
        if agent_raw is None
        else ann.parse_scoped_log_levels(names.ANNOTATION_AGENT_LOG_LEVEL, agent_raw),
        rewrite_probes=_bool(
            annotations,
            names.ANNOTATION_REWRITE_PROBES,
            values.sidecar_injector_webhook.rewrite_app_http_probe,
        ),
        merge_metrics=_bool(
            annotations, names.ANNOTATION_MERGE_METRICS, mesh.enable_prometheus_merge
        ),
        user_volumes=_json_map(annotations, names.ANNOTATION_USER_VOLUME),
        user_volume_mounts=_json_map(annotations, names.ANNOTATION_USER_VOLUME_MOUNT),
        bootstrap_override=_config_map_name(annotations, names.ANNOTATION_BOOTSTRAP_OVERRIDE),
        bypass_init_containers=_bypass_init_containers(annotations),
    )


def _has_proxy(spec: Mapping[str, Any]) -> bool:
    return any(
        isinstance(c, dict) and c.get("name") == names.CONTAINER_PROXY
        for field in ("containers", "initContainers")
        for c in spec.get(field) or []
    )


def after_template(params: InjectionParams, rendered: Mapping[str, Any]) -> InjectionParams:
    """Post-processing, decided once the templates rendered (as Istio decides it on the merged
    pod): an annotation the templates set wins over the pod's (Istio's `grpc-agent` turns probe
    rewriting off), and with no `istio-proxy` (`grpc-simple`) no agent listens on the status
    port, so app probes stay as they are and metrics are not merged."""
    metadata = rendered.get("metadata")
    found = metadata.get("annotations") if isinstance(metadata, dict) else None
    annotations: Mapping[str, str] = found if isinstance(found, dict) else {}
    spec = rendered.get("spec")
    proxy = isinstance(spec, dict) and _has_proxy(spec)
    return replace(
        params,
        rewrite_probes=proxy
        and _bool(annotations, names.ANNOTATION_REWRITE_PROBES, params.rewrite_probes),
        merge_metrics=proxy
        and _bool(annotations, names.ANNOTATION_MERGE_METRICS, params.merge_metrics),
    )
