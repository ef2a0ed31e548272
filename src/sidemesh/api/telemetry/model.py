"""`telemetry.istio.io` Telemetry: typed, frozen spec models and the checks pydantic's field
rules cannot express. What sidecars cannot honour is refused with the reason, never ignored:
CEL (`filter.expression`, `tagOverrides` UPSERT values) and `targetRefs` (gateways)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sidemesh.api.networking.common import Issues, Model

WorkloadMode = Literal["CLIENT", "SERVER", "CLIENT_AND_SERVER"]
# Istio's metric names in overrides, and the Prometheus families they stand for.
METRICS: dict[str, tuple[str, ...]] = {
    "REQUEST_COUNT": ("requests_total",),
    "REQUEST_DURATION": ("request_duration_milliseconds",),
    "REQUEST_SIZE": ("request_bytes",),
    "RESPONSE_SIZE": ("response_bytes",),
    "TCP_OPENED_CONNECTIONS": ("tcp_connections_opened_total",),
    "TCP_CLOSED_CONNECTIONS": ("tcp_connections_closed_total",),
    "TCP_SENT_BYTES": ("tcp_sent_bytes_total",),
    "TCP_RECEIVED_BYTES": ("tcp_received_bytes_total",),
    "GRPC_REQUEST_MESSAGES": (),
    "GRPC_RESPONSE_MESSAGES": (),
}
ALL_METRICS = "ALL_METRICS"


class WorkloadSelector(Model):
    match_labels: dict[str, str] = Field(default_factory=dict, alias="matchLabels")


class ProviderRef(Model):
    name: str = Field(min_length=1)


class TracingSelector(Model):
    mode: WorkloadMode = "CLIENT_AND_SERVER"


class LiteralTag(Model):
    value: str


class EnvironmentTag(Model):
    name: str = Field(min_length=1)
    default_value: str = Field("", alias="defaultValue")


class HeaderTag(Model):
    name: str = Field(min_length=1)
    default_value: str = Field("", alias="defaultValue")


class CustomTag(Model):
    literal: LiteralTag | None = None
    environment: EnvironmentTag | None = None
    header: HeaderTag | None = None


class Tracing(Model):
    match: TracingSelector | None = None
    providers: tuple[ProviderRef, ...] = ()
    custom_tags: dict[str, CustomTag] = Field(default_factory=dict, alias="customTags")
    disable_span_reporting: bool | None = Field(None, alias="disableSpanReporting")
    random_sampling_percentage: float | None = Field(
        None, alias="randomSamplingPercentage", ge=0.0, le=100.0
    )


class AccessLogFilter(Model):
    expression: str = ""


class AccessLogging(Model):
    match: TracingSelector | None = None
    providers: tuple[ProviderRef, ...] = ()
    disabled: bool | None = None
    filter: AccessLogFilter | None = None


class MetricSelector(Model):
    metric: str | None = None
    custom_metric: str | None = Field(None, alias="customMetric")
    mode: WorkloadMode = "CLIENT_AND_SERVER"


class TagOverride(Model):
    operation: Literal["UPSERT", "REMOVE"] = "UPSERT"
    value: str | None = None


class MetricsOverrides(Model):
    match: MetricSelector | None = None
    disabled: bool | None = None
    tag_overrides: dict[str, TagOverride] = Field(default_factory=dict, alias="tagOverrides")


class Metrics(Model):
    providers: tuple[ProviderRef, ...] = ()
    overrides: tuple[MetricsOverrides, ...] = ()
    reporting_interval: str | None = Field(None, alias="reportingInterval")


class TargetRef(Model):
    group: str = ""
    kind: str = ""
    name: str = ""
    namespace: str = ""


class Telemetry(Model):
    selector: WorkloadSelector | None = None
    target_ref: TargetRef | None = Field(None, alias="targetRef")
    target_refs: tuple[TargetRef, ...] = Field((), alias="targetRefs")
    tracing: tuple[Tracing, ...] = ()
    access_logging: tuple[AccessLogging, ...] = Field((), alias="accessLogging")
    metrics: tuple[Metrics, ...] = ()


def check_telemetry(spec: Telemetry, issues: Issues) -> None:
    if spec.target_ref is not None or spec.target_refs:
        issues.add("spec.targetRefs", "is not supported (gateways); select workloads with "
                   "spec.selector")  # fmt: skip
    if spec.selector is not None and not spec.selector.match_labels:
        issues.add("spec.selector.matchLabels", "must name at least one label")
    for i, tracing in enumerate(spec.tracing):
        for name, custom in tracing.custom_tags.items():
            chosen = [t for t in (custom.literal, custom.environment, custom.header) if t]
            if len(chosen) != 1:
                issues.add(f"spec.tracing[{i}].customTags.{name}",
                           "must set exactly one of literal, environment, header")  # fmt: skip
    for i, logging in enumerate(spec.access_logging):
        if logging.filter is not None and logging.filter.expression:
            issues.add(f"spec.accessLogging[{i}].filter.expression",
                       "CEL filters are not supported by sidemesh sidecars")  # fmt: skip
    for i, metrics in enumerate(spec.metrics):
        for j, override in enumerate(metrics.overrides):
            where = f"spec.metrics[{i}].overrides[{j}]"
            match = override.match
            if match is not None and match.custom_metric:
                issues.add(f"{where}.match.customMetric", "custom metrics are not supported")
            if match is not None and match.metric not in (None, ALL_METRICS, *METRICS):
                issues.add(f"{where}.match.metric",
                           f"{match.metric!r} is not one of {ALL_METRICS}, "
                           f"{', '.join(METRICS)}")  # fmt: skip
            for tag, change in override.tag_overrides.items():
                if change.operation == "UPSERT":
                    issues.add(f"{where}.tagOverrides.{tag}",
                               "UPSERT (a CEL value) is not supported; REMOVE is")  # fmt: skip
