"""An HTTP connection manager's tracing (pure: Envoy JSON out): the provider, the sampling and
Istio's span tags.

Both sides of a mesh request trace with the same configuration: the client side (outbound)
decides by `random_sampling` and starts the trace; Envoy marks its decision in `x-request-id`
and the propagated context (b3 for Zipkin, W3C `traceparent` for OpenTelemetry), which the
server side (inbound) continues, so the two spans share one trace id.

OpenTelemetry names the span's service in the resource (`service.name`). Istio's is
`<canonical-service>.<namespace>`, which differs per workload, while the control plane sends
every proxy of a view the same bytes: so the tracer carries no `service_name` of its own and
Envoy's environment resource detector reads it from `OTEL_RESOURCE_ATTRIBUTES`, which the agent
sets for Envoy (`api/telemetry/peer.py`, `otel_resource_attributes`).
"""

# mypy: disable-error-code="import-untyped"

from __future__ import annotations

from typing import Any, Final

from envoy.config.trace.v3 import opentelemetry_pb2, zipkin_pb2  # noqa: F401  (register types)
from envoy.extensions.tracers.opentelemetry.resource_detectors.v3 import (  # noqa: F401
    environment_resource_detector_pb2,
)

from sidemesh.api.telemetry import peer
from sidemesh.xds.envoy_json import typed
from sidemesh.xds.telemetry_policy import Tracing

ENVIRONMENT_DETECTOR: Final = "envoy.tracers.opentelemetry.resource_detectors.environment"


def _zipkin(tracing: Tracing) -> tuple[str, dict[str, Any]]:
    provider = tracing.provider
    config = typed(
        "envoy.config.trace.v3.ZipkinConfig",
        collector_cluster=tracing.cluster,
        collector_endpoint=provider.path,
        collector_endpoint_version="HTTP_JSON",
        collector_hostname=provider.service,
        trace_id_128bit=True,
        shared_span_context=False,
        trace_context_option="USE_B3_WITH_W3C_PROPAGATION",
    )
    return "envoy.tracers.zipkin", config


def _opentelemetry(tracing: Tracing) -> tuple[str, dict[str, Any]]:
    provider = tracing.provider
    if provider.http:
        uri = f"http://{provider.service}:{provider.port}{provider.path}"
        transport: dict[str, Any] = {"http_service": {"http_uri": {
            "uri": uri, "cluster": tracing.cluster, "timeout": provider.timeout,
        }}}  # fmt: skip
    else:
        transport = {"grpc_service": {
            "envoy_grpc": {"cluster_name": tracing.cluster, "authority": provider.service},
            "timeout": provider.timeout,
        }}  # fmt: skip
    detector = typed("envoy.extensions.tracers.opentelemetry.resource_detectors.v3."
                     "EnvironmentResourceDetectorConfig")  # fmt: skip
    config = typed(
        "envoy.config.trace.v3.OpenTelemetryConfig",
        **transport,
        resource_detectors=[{"name": ENVIRONMENT_DETECTOR, "typed_config": detector}],
    )
    return "envoy.tracers.opentelemetry", config


def tracing_config(tracing: Tracing) -> dict[str, Any]:
    """An HTTP connection manager's `tracing`: the provider, the sampling, Istio's tags."""
    if tracing.provider.kind == "zipkin":
        name, typed_config = _zipkin(tracing)
    else:
        name, typed_config = _opentelemetry(tracing)
    own = [
        ("istio.canonical_service", "environment", peer.ENVIRONMENT_PREFIX + "CANONICAL_SERVICE"),
        ("istio.canonical_revision", "environment",
         peer.ENVIRONMENT_PREFIX + "CANONICAL_REVISION"),
        ("istio.namespace", "environment", peer.ENVIRONMENT_PREFIX + "NAMESPACE"),
    ]  # fmt: skip
    tags: list[dict[str, Any]] = [{"tag": tag, kind: {"name": value}} for tag, kind, value in own]
    if tracing.mesh_id:
        tags.append({"tag": "istio.mesh_id", "literal": {"value": tracing.mesh_id}})
    for tag, kind, value, default in tracing.custom_tags:
        if kind == "literal":
            tags.append({"tag": tag, "literal": {"value": value}})
        else:
            tags.append({"tag": tag, kind: {"name": value, "default_value": default}})
    config: dict[str, Any] = {
        "random_sampling": {"value": tracing.sampling},
        "provider": {"name": name, "typed_config": typed_config},
        "custom_tags": tags,
    }
    if tracing.provider.max_tag_length is not None:
        config["max_path_tag_length"] = tracing.provider.max_tag_length
    return config
