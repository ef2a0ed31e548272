"""The mesh-wide telemetry settings of MeshConfig, as one frozen, hashable value the snapshot
carries: Istio's legacy access log fields, the extension providers and the default ones."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:  # the snapshot carries MeshTelemetry without loading the config models
    from sidemesh.api.config import MeshConfig

# Istio's default access log formats (`accessLogFormat` unset), TEXT and JSON.
DEFAULT_TEXT_FORMAT: Final = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "
    '"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% '
    "%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% "
    "%REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"
)
DEFAULT_JSON_FORMAT: Final = (
    ("authority", "%REQ(:AUTHORITY)%"),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("connection_termination_details", "%CONNECTION_TERMINATION_DETAILS%"),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("duration", "%DURATION%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("route_name", "%ROUTE_NAME%"),
    ("start_time", "%START_TIME%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER_RAW%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
    ("upstream_service_time", "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%"),
    ("upstream_transport_failure_reason", "%UPSTREAM_TRANSPORT_FAILURE_REASON%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
)
# Istio's built-in provider: the mesh's access log (`accessLogFile`, or stdout).
ENVOY_PROVIDER: Final = "envoy"
STDOUT: Final = "/dev/stdout"
DEFAULT_SAMPLING: Final = 1.0  # percent, Istio's default


@dataclass(frozen=True)
class FileAccessLog:
    """One access log file and its format: text, or JSON (field name → formatter)."""

    path: str
    text: str | None = None
    json: tuple[tuple[str, str], ...] | None = None


@dataclass(frozen=True)
class TracingProvider:
    name: str
    kind: Literal["zipkin", "opentelemetry"]
    service: str
    port: int
    path: str = ""  # zipkin, and opentelemetry over HTTP
    http: bool = False  # opentelemetry: OTLP/HTTP instead of gRPC
    timeout: str = "5s"
    max_tag_length: int | None = None


@dataclass(frozen=True)
class MeshTelemetry:
    access_log: FileAccessLog | None = None  # accessLogFile
    # Istio's built-in `envoy` provider: accessLogFile (else stdout) in the mesh's format
    envoy_log: FileAccessLog = FileAccessLog(STDOUT, text=DEFAULT_TEXT_FORMAT)
    access_log_providers: tuple[tuple[str, FileAccessLog], ...] = ()
    tracing_providers: tuple[TracingProvider, ...] = ()
    default_access_logging: tuple[str, ...] = ()
    default_tracing: tuple[str, ...] = ()
    enable_tracing: bool = True
    sampling: float = DEFAULT_SAMPLING
    mesh_id: str = ""

    def access_log_provider(self, name: str) -> FileAccessLog | None:
        if name == ENVOY_PROVIDER:
            return self.envoy_log
        return dict(self.access_log_providers).get(name)

    def tracing_provider(self, name: str) -> TracingProvider | None:
        return next((p for p in self.tracing_providers if p.name == name), None)


def mesh_access_log(path: str, encoding: str, log_format: str) -> FileAccessLog:
    """Istio's rule: the format, or its default, in the encoding asked for. A JSON format is a
    JSON object of field → formatter; one that is not parses as text, as Envoy would fail."""
    if encoding == "JSON":
        if not log_format:
            return FileAccessLog(path, json=DEFAULT_JSON_FORMAT)
        try:
            parsed = json.loads(log_format)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            return FileAccessLog(path, json=tuple((str(k), str(v)) for k, v in parsed.items()))
        raise ValueError("accessLogFormat must be a JSON object when accessLogEncoding is JSON")
    text = log_format or DEFAULT_TEXT_FORMAT
    return FileAccessLog(path, text=text if text.endswith("\n") else text + "\n")


def _sampling(mesh: MeshConfig) -> float:
    tracing = mesh.default_config.tracing or {}
    value = tracing.get("sampling")
    return (
        float(value) if isinstance(value, int | float) and 0 <= value <= 100 else DEFAULT_SAMPLING
    )


def mesh_telemetry(mesh: MeshConfig) -> MeshTelemetry:
    """The telemetry part of a MeshConfig (ValueError: a setting that cannot be honoured)."""
    access_providers: list[tuple[str, FileAccessLog]] = []
    tracing: list[TracingProvider] = []
    for provider in mesh.extension_providers:
        if provider.envoy_file_access_log is not None:
            found = provider.envoy_file_access_log
            log_format = found.log_format
            if log_format is not None and log_format.labels is not None:
                log = FileAccessLog(found.path, json=tuple(sorted(log_format.labels.items())))
            else:
                text = log_format.text if log_format is not None else None
                log = mesh_access_log(found.path, "TEXT", text or "")
            access_providers.append((provider.name, log))
        elif provider.zipkin is not None:
            zipkin = provider.zipkin
            tracing.append(
                TracingProvider(provider.name, "zipkin", zipkin.service, zipkin.port, zipkin.path,
                                max_tag_length=zipkin.max_tag_length)
            )  # fmt: skip
        elif provider.opentelemetry is not None:
            otel = provider.opentelemetry
            http = otel.http
            tracing.append(TracingProvider(
                provider.name, "opentelemetry", otel.service, otel.port,
                http.path if http is not None else "", http=http is not None,
                timeout=http.timeout if http is not None else "5s",
                max_tag_length=otel.max_tag_length,
            ))  # fmt: skip
    file = mesh.access_log_file
    envoy_log = mesh_access_log(file or STDOUT, mesh.access_log_encoding, mesh.access_log_format)
    return MeshTelemetry(
        access_log=envoy_log if file else None,
        envoy_log=envoy_log,
        access_log_providers=tuple(access_providers),
        tracing_providers=tuple(tracing),
        default_access_logging=mesh.default_providers.access_logging,
        default_tracing=mesh.default_providers.tracing,
        enable_tracing=mesh.enable_tracing,
        sampling=_sampling(mesh),
        mesh_id=mesh.mesh_id or mesh.trust_domain,
    )  # fmt: skip
