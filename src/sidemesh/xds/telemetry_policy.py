"""Which access logs, tracing and metrics one workload gets (pure): MeshConfig's telemetry
settings and the Telemetry resources that apply to it, composed as Istio composes them.

Precedence, per section (`accessLogging`, `tracing`): a Telemetry with a selector
matching the workload (in its namespace) > its namespace's Telemetry without selector > the
root namespace's without selector (mesh-wide) > MeshConfig (`accessLogFile`,
`defaultProviders`). Within a level the oldest wins (here: the first by name). Each section
splits by `match.mode` into the client side (outbound) and the server side (inbound).

`metrics` is merged instead (`merge_metrics`, Istio's `mergeMetrics`): the overrides of the
mesh, namespace and workload levels apply in that order, each on top of the ones before, per
metric and side, so a workload can re-enable (`disabled: false`) what the mesh disabled.

A provider the mesh does not define, or whose collector service the registry does not know,
is left out with a reason: Envoy would refuse the whole listener for a missing cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from sidemesh.api.telemetry.mesh import FileAccessLog, MeshTelemetry, TracingProvider
from sidemesh.api.telemetry.model import ALL_METRICS, METRICS, Telemetry
from sidemesh.xds.resource_names import outbound_cluster_name

if TYPE_CHECKING:
    from sidemesh.api.networking import Resource
    from sidemesh.xds.model import MeshSnapshot

Side = Literal["CLIENT", "SERVER"]


@dataclass(frozen=True)
class Tracing:
    provider: TracingProvider
    cluster: str  # the collector's outbound cluster
    sampling: float  # percent
    custom_tags: tuple[tuple[str, str, str, str], ...] = ()  # tag, kind, name/value, default
    mesh_id: str = ""  # the `istio.mesh_id` tag


@dataclass(frozen=True)
class SidePlan:
    """One side's (client or server) telemetry."""

    access_logs: tuple[FileAccessLog, ...] = ()
    tracing: Tracing | None = None
    disabled_metrics: frozenset[str] = frozenset()  # Prometheus names without `istio_`
    removed_tags: tuple[tuple[str, str], ...] = ()  # (metric or "", tag)


@dataclass(frozen=True)
class TelemetryPolicy:
    client: SidePlan = SidePlan()
    server: SidePlan = SidePlan()
    skipped: tuple[str, ...] = field(default=(), compare=False)  # reasons, for the logs


DEFAULT_POLICY = TelemetryPolicy()


def _applies(side: Side, mode: str | None) -> bool:
    return mode in (None, "CLIENT_AND_SERVER") or mode == side


def _levels(
    telemetries: Sequence[Resource[Telemetry]],
    *,
    root_namespace: str,
    namespace: str,
    labels: Mapping[str, str],
) -> list[list[Resource[Telemetry]]]:
    """Mesh, namespace and workload Telemetries that apply, most specific level last."""
    mesh, namespace_wide, workload = [], [], []
    for resource in telemetries:
        selector = resource.spec.selector
        if resource.namespace == root_namespace and selector is None:
            mesh.append(resource)
        elif resource.namespace == namespace and selector is None:
            namespace_wide.append(resource)
        elif (
            resource.namespace == namespace
            and selector is not None
            and all(labels.get(k) == v for k, v in selector.match_labels.items())
        ):
            workload.append(resource)
    return [sorted(level, key=lambda r: r.name) for level in (mesh, namespace_wide, workload)]


def _most_specific(
    levels: list[list[Resource[Telemetry]]], section: str, side: Side | None = None
) -> Telemetry | None:
    """The most specific Telemetry with `section`; with `side`, with an entry of `section`
    that applies to that side (a workload's client-only logging leaves its server side to the
    namespace's or the mesh's, as in Istio)."""
    for level in reversed(levels):
        for resource in level:
            entries = getattr(resource.spec, section)
            if side is None and entries:
                return resource.spec
            if side is not None and any(
                _applies(side, entry.match.mode if entry.match else None) for entry in entries
            ):
                return resource.spec
    return None


def _access_logs(mesh: MeshTelemetry, spec: Telemetry | None, side: Side,
                 skipped: list[str]) -> tuple[FileAccessLog, ...]:  # fmt: skip
    if spec is None:
        if mesh.access_log is not None:
            return (mesh.access_log,)
        names: Sequence[str] = mesh.default_access_logging
    else:
        chosen = [entry for entry in spec.access_logging
                  if _applies(side, entry.match.mode if entry.match else None)]  # fmt: skip
        if not chosen or any(entry.disabled for entry in chosen):
            return ()
        names = [p.name for entry in chosen for p in entry.providers] or list(
            mesh.default_access_logging
        )
    found = []
    for name in dict.fromkeys(names):
        log = mesh.access_log_provider(name)
        if log is None:
            skipped.append(f"access log provider {name!r} is not an envoyFileAccessLog provider")
        else:
            found.append(log)
    return tuple(found)


def _tracing(snapshot: MeshSnapshot, mesh: MeshTelemetry, spec: Telemetry | None, side: Side,
             skipped: list[str]) -> Tracing | None:  # fmt: skip
    if not mesh.enable_tracing:
        return None
    sampling = mesh.sampling
    tags: tuple[tuple[str, str, str, str], ...] = ()
    if spec is None:
        names: Sequence[str] = mesh.default_tracing
    else:
        chosen = [entry for entry in spec.tracing
                  if _applies(side, entry.match.mode if entry.match else None)]  # fmt: skip
        if not chosen or any(entry.disable_span_reporting for entry in chosen):
            return None
        names = [p.name for entry in chosen for p in entry.providers] or list(mesh.default_tracing)
        percentages = [e.random_sampling_percentage for e in chosen
                       if e.random_sampling_percentage is not None]  # fmt: skip
        sampling = percentages[0] if percentages else sampling
        tags = tuple(_custom_tags(chosen[0].custom_tags))
    for name in names:  # Envoy traces to one provider: the first usable one
        provider = mesh.tracing_provider(name)
        if provider is None:
            skipped.append(f"tracing provider {name!r} is not a zipkin or opentelemetry provider")
            continue
        service = snapshot.services_by_host.get(provider.service)
        if service is None or service.port(provider.port) is None:
            skipped.append(f"tracing provider {name!r}: no service {provider.service} with "
                           f"port {provider.port} in the registry")  # fmt: skip
            continue
        cluster = outbound_cluster_name(provider.port, provider.service)
        return Tracing(provider, cluster, sampling, tags, mesh.mesh_id)
    return None


def _custom_tags(tags: Mapping[str, object]) -> list[tuple[str, str, str, str]]:
    found = []
    for tag, value in sorted(tags.items()):
        literal, environment, header = (getattr(value, k) for k in ("literal", "environment",
                                                                     "header"))  # fmt: skip
        if literal is not None:
            found.append((tag, "literal", literal.value, ""))
        elif environment is not None:
            found.append((tag, "environment", environment.name, environment.default_value))
        elif header is not None:
            found.append((tag, "request_header", header.name, header.default_value))
    return found


def merge_metrics(
    specs: Sequence[Telemetry], side: Side
) -> tuple[frozenset[str], tuple[tuple[str, str], ...]]:
    """Istio's `mergeMetrics` for one side: (disabled Prometheus families, removed tags).

    `specs` go from the least specific level to the most specific; their overrides apply in
    order, each on top of the ones before, keyed by (metric, side):

    * `disabled` set (true or false) replaces what earlier overrides said of that metric;
      unset leaves it; a tag override replaces the earlier one of the same tag;
    * `ALL_METRICS` with `disabled: true` turns every metric off *without* recording it per
      metric, and any later override that applies to the side turns them back on (Istio:
      "root namespace disables all, but then enables them by namespace scoped"), keeping the
      per-metric state that was there before. An override without `match.metric` is not
      `ALL_METRICS` in that sense: it disables each metric, as Istio does.

    Istio drops the whole provider for an ALL_METRICS disable whatever its `mode`; here the
    mode is honoured (a client-only disable leaves the server side's metrics on)."""
    disabled: dict[str, bool] = {}  # Istio metric name → its last `disabled`
    tags: dict[str, dict[str, str]] = {}  # Istio metric name → tag → last operation
    all_off = False
    for spec in specs:
        for metrics in spec.metrics:
            for override in metrics.overrides:
                match = override.match
                if match is not None and not _applies(side, match.mode):
                    continue
                metric = match.metric if match is not None and match.metric else None
                if metric == ALL_METRICS and override.disabled:
                    all_off = True
                    continue
                all_off = False
                for name in list(METRICS) if metric in (None, ALL_METRICS) else [metric]:
                    if override.disabled is not None:
                        disabled[name] = override.disabled
                    for tag, change in override.tag_overrides.items():
                        tags.setdefault(name, {})[tag] = change.operation
    off = set(METRICS) if all_off else {name for name, value in disabled.items() if value}
    families = frozenset(family for name in off for family in METRICS[name])
    removed = {(family, tag) for name, changes in tags.items()
               for tag, operation in changes.items() if operation == "REMOVE"
               for family in METRICS[name]}  # fmt: skip
    return families, tuple(sorted(removed))


def _metrics_levels(levels: list[list[Resource[Telemetry]]]) -> list[Telemetry]:
    """Per level (mesh, namespace, workload) the first Telemetry with a `metrics` section."""
    found = []
    for level in levels:
        spec = next((r.spec for r in level if r.spec.metrics), None)
        if spec is not None:
            found.append(spec)
    return found


def telemetry_policy(
    snapshot: MeshSnapshot, namespace: str, labels: Mapping[str, str]
) -> TelemetryPolicy:
    """The telemetry of the workload with `labels` in `namespace`."""
    mesh = snapshot.mesh_telemetry
    levels = _levels(snapshot.telemetries, root_namespace=snapshot.root_namespace,
                     namespace=namespace, labels=labels)  # fmt: skip
    metrics = _metrics_levels(levels)
    skipped: list[str] = []
    sides = {}
    for side in ("CLIENT", "SERVER"):
        logging = _most_specific(levels, "access_logging", side)
        tracing = _most_specific(levels, "tracing", side)
        disabled, removed = merge_metrics(metrics, side)
        sides[side] = SidePlan(
            access_logs=_access_logs(mesh, logging, side, skipped),
            tracing=_tracing(snapshot, mesh, tracing, side, skipped),
            disabled_metrics=disabled,
            removed_tags=removed,
        )
    return TelemetryPolicy(sides["CLIENT"], sides["SERVER"], tuple(dict.fromkeys(skipped)))
