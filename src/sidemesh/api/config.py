"""Configuration models: MeshConfig, ProxyConfig and the injector's config and values.

Field names are Istio's (camelCase in files) so existing configuration reads unchanged.
Unknown fields are rejected: a typo in mesh or injector configuration should fail loudly at
load time, not silently fall back to a default at injection time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sidemesh import __version__
from sidemesh.api import names
from sidemesh.api.selectors import LabelSelector

M = TypeVar("M", bound=BaseModel)

InterceptionMode = Literal["REDIRECT", "TPROXY", "NONE"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class ProxyConfig(_Model):
    """The part of Istio's ProxyConfig the sidecar honours."""

    discovery_address: str = Field("", alias="discoveryAddress")
    hold_application_until_proxy_starts: bool = Field(
        False, alias="holdApplicationUntilProxyStarts"
    )
    termination_drain_duration: str = Field("5s", alias="terminationDrainDuration")
    drain_duration: str = Field("45s", alias="drainDuration")
    concurrency: int | None = Field(None, ge=0)
    status_port: int = Field(names.PORT_AGENT_STATUS, alias="statusPort", ge=0, le=65535)
    interception_mode: InterceptionMode = Field("REDIRECT", alias="interceptionMode")
    proxy_metadata: dict[str, str] = Field(default_factory=dict, alias="proxyMetadata")
    tracing: dict[str, Any] | None = None
    cluster_name: str = Field("", alias="clusterName")

    def overlay(self, patch: dict[str, Any]) -> ProxyConfig:
        """This config with the fields of `patch` (file spelling) replaced."""
        merged = self.model_dump(by_alias=True, exclude_unset=False)
        merged.update(patch)
        return ProxyConfig.model_validate(merged)

    def non_default(self) -> dict[str, Any]:
        """Fields that differ from ProxyConfig(): what goes into the PROXY_CONFIG env."""
        default = ProxyConfig().model_dump(by_alias=True)
        mine = self.model_dump(by_alias=True)
        return {k: v for k, v in mine.items() if v != default[k]}


class OutboundTrafficPolicy(_Model):
    mode: Literal["ALLOW_ANY", "REGISTRY_ONLY"] = "ALLOW_ANY"


class ZipkinProvider(_Model):
    service: str
    port: int = Field(ge=1, le=65535)
    max_tag_length: int | None = Field(None, alias="maxTagLength", ge=0)
    path: str = "/api/v2/spans"


class OpenTelemetryHttp(_Model):
    path: str = "/v1/traces"
    timeout: str = "5s"


class OpenTelemetryProvider(_Model):
    """OTLP over gRPC, or over HTTP (protobuf) when `http` is set."""

    service: str
    port: int = Field(ge=1, le=65535)
    max_tag_length: int | None = Field(None, alias="maxTagLength", ge=0)
    http: OpenTelemetryHttp | None = None


class AccessLogFormat(_Model):
    text: str | None = None
    labels: dict[str, str] | None = None


class FileAccessLogProvider(_Model):
    path: str
    log_format: AccessLogFormat | None = Field(None, alias="logFormat")


class ExtensionProvider(_Model):
    """One of `meshConfig.extensionProviders` (the kinds sidemesh's sidecars serve)."""

    name: str = Field(min_length=1)
    zipkin: ZipkinProvider | None = None
    opentelemetry: OpenTelemetryProvider | None = None
    envoy_file_access_log: FileAccessLogProvider | None = Field(None, alias="envoyFileAccessLog")
    prometheus: dict[str, Any] | None = None


class DefaultProviders(_Model):
    tracing: tuple[str, ...] = ()
    access_logging: tuple[str, ...] = Field((), alias="accessLogging")
    metrics: tuple[str, ...] = ()


class MeshConfig(_Model):
    trust_domain: str = Field(names.TRUST_DOMAIN, alias="trustDomain")
    default_config: ProxyConfig = Field(default_factory=ProxyConfig, alias="defaultConfig")
    enable_prometheus_merge: bool = Field(True, alias="enablePrometheusMerge")
    outbound_traffic_policy: OutboundTrafficPolicy = Field(
        default_factory=OutboundTrafficPolicy, alias="outboundTrafficPolicy"
    )
    root_namespace: str = Field(names.CONTROL_PLANE_NAMESPACE, alias="rootNamespace")
    mesh_id: str = Field("", alias="meshId")
    # Telemetry (api/telemetry): Istio's legacy access log settings, the providers the
    # Telemetry API names, and the ones used when a Telemetry names none.
    access_log_file: str = Field("", alias="accessLogFile")
    access_log_encoding: Literal["TEXT", "JSON"] = Field("TEXT", alias="accessLogEncoding")
    access_log_format: str = Field("", alias="accessLogFormat")
    enable_tracing: bool = Field(True, alias="enableTracing")
    extension_providers: tuple[ExtensionProvider, ...] = Field((), alias="extensionProviders")
    default_providers: DefaultProviders = Field(
        default_factory=DefaultProviders, alias="defaultProviders"
    )


class ResourceList(_Model):
    cpu: str | None = None
    memory: str | None = None


class Resources(_Model):
    requests: ResourceList = Field(default_factory=lambda: ResourceList(cpu="100m", memory="128Mi"))
    limits: ResourceList = Field(default_factory=lambda: ResourceList(cpu="2000m", memory="1024Mi"))


class ProxyValues(_Model):
    image: str = "sidemesh"
    resources: Resources = Field(default_factory=Resources)
    log_level: str = Field("warning", alias="logLevel")
    component_log_level: str = Field("misc:error", alias="componentLogLevel")
    agent_log_level: str = Field("default:info", alias="agentLogLevel")
    include_ip_ranges: str = Field("*", alias="includeIPRanges")
    exclude_ip_ranges: str = Field("", alias="excludeIPRanges")
    include_inbound_ports: str = Field("*", alias="includeInboundPorts")
    exclude_inbound_ports: str = Field("", alias="excludeInboundPorts")
    include_outbound_ports: str = Field("", alias="includeOutboundPorts")
    exclude_outbound_ports: str = Field("", alias="excludeOutboundPorts")
    status_port: int = Field(names.PORT_AGENT_STATUS, alias="statusPort", ge=0, le=65535)
    readiness_initial_delay_seconds: int = Field(0, alias="readinessInitialDelaySeconds", ge=0)
    readiness_period_seconds: int = Field(15, alias="readinessPeriodSeconds", ge=1)
    readiness_failure_threshold: int = Field(4, alias="readinessFailureThreshold", ge=1)
    hold_application_until_proxy_starts: bool = Field(
        False, alias="holdApplicationUntilProxyStarts"
    )
    cluster_domain: str = Field("cluster.local", alias="clusterDomain")
    privileged: bool = False


class GlobalValues(_Model):
    hub: str = "ghcr.io/sidemesh"
    tag: str = __version__
    image_pull_policy: Literal["", "Always", "IfNotPresent", "Never"] = Field(
        "", alias="imagePullPolicy"
    )
    image_pull_secrets: tuple[str, ...] = Field((), alias="imagePullSecrets")
    proxy: ProxyValues = Field(default_factory=ProxyValues)
    mesh_id: str = Field("", alias="meshID")
    network: str = ""
    cluster_id: str = Field(names.DEFAULT_CLUSTER_ID, alias="clusterID")


class SidecarInjectorWebhookValues(_Model):
    native_sidecar: bool = Field(False, alias="nativeSidecar")
    rewrite_app_http_probe: bool = Field(True, alias="rewriteAppHTTPProbe")
    reinvocation_policy: Literal["Never", "IfNeeded"] = Field("Never", alias="reinvocationPolicy")
    timeout_seconds: int = Field(10, alias="timeoutSeconds", ge=1, le=30)


class InjectorValues(_Model):
    global_: GlobalValues = Field(default_factory=GlobalValues, alias="global")
    sidecar_injector_webhook: SidecarInjectorWebhookValues = Field(
        default_factory=SidecarInjectorWebhookValues, alias="sidecarInjectorWebhook"
    )
    revision: str = ""

    def proxy_image(self) -> str:
        image = self.global_.proxy.image
        if "/" in image or ":" in image or "@" in image:
            return image  # already a full reference
        return f"{self.global_.hub}/{image}:{self.global_.tag}"


class InjectorConfig(_Model):
    """Istio's `config` key of the injector ConfigMap."""

    policy: Literal["enabled", "disabled"] = "enabled"
    always_inject_selector: tuple[LabelSelector, ...] = Field((), alias="alwaysInjectSelector")
    never_inject_selector: tuple[LabelSelector, ...] = Field((), alias="neverInjectSelector")
    injected_annotations: dict[str, str] = Field(default_factory=dict, alias="injectedAnnotations")
    default_templates: tuple[str, ...] = Field(("sidecar",), alias="defaultTemplates")
    templates: dict[str, str] = Field(default_factory=dict)


class ConfigError(Exception):
    """A configuration file could not be read; the message names the file and the problem."""


def load_yaml_file(path: Path) -> Any:
    """Parse one YAML document, naming the file (and line, when YAML says) on failure."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        return yaml.load(text, Loader=yaml.CSafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from exc


def _validated(model: type[M], data: Any, source: str) -> M:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{source}: {problems}") from exc


def load_mesh_config(path: Path | None) -> MeshConfig:
    return MeshConfig() if path is None else _validated(MeshConfig, load_yaml_file(path), str(path))


def load_injector_values(path: Path | None) -> InjectorValues:
    if path is None:
        return InjectorValues()
    return _validated(InjectorValues, load_yaml_file(path), str(path))


def load_injector_config(path: Path | None) -> InjectorConfig:
    if path is None:
        return InjectorConfig()
    return _validated(InjectorConfig, load_yaml_file(path), str(path))


def parse_mesh_config(text: str, source: str) -> MeshConfig:
    """A MeshConfig from YAML text (a ConfigMap's `mesh` key); `ConfigError` names `source`
    and the problem. Empty text is the default MeshConfig, as an empty file is."""
    try:
        data = yaml.load(text, Loader=yaml.CSafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    return _validated(MeshConfig, data, source)


def parse_model(model: type[M], data: Any, source: str) -> M:
    """Validate already-parsed data, raising ConfigError that names `source`."""
    return _validated(model, data, source)
