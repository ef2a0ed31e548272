"""Which sidecar each pod of a namespace should run now, from a read-only cluster snapshot.

The namespace's labels pick a webhook configuration exactly as the API server would for a new
pod (tags resolved to their revision); that revision's injector is rebuilt from its
`istio-sidecar-injector[-REV]` ConfigMap (config and values) and its `istio[-REV]` mesh
ConfigMap, so the planner re-injects with the very settings the webhook uses. Pure: the
snapshot is loaded elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import yaml
from pydantic import ValidationError

from sidemesh.api.config import InjectorConfig, InjectorValues, MeshConfig
from sidemesh.inject.decision import pod_labels
from sidemesh.inject.engine import Injector
from sidemesh.inject.settings import InjectorSettings
from sidemesh.inject.template import TemplateError
from sidemesh.inject.webhooks import WebhookEntry, match_webhooks
from sidemesh.install import naming
from sidemesh.install.webhooks import read_live_webhooks
from sidemesh.kube.snapshot import ClusterSnapshot, labels_of, name_of, namespace_of
from sidemesh.rollout.plan import PodPlan, plan_pod, sidecar_revision, workload_of

Object = dict[str, Any]


@dataclass(frozen=True)
class RolloutView:
    """What planning needs: namespace labels, the pods, the injector webhooks' entries, and
    a way to get each revision's injector (or why there is none)."""

    namespace_labels: Mapping[str, Mapping[str, str]]
    pods: tuple[Object, ...]
    entries: tuple[WebhookEntry, ...]
    injector_for: Callable[[str], Injector | str]

    def injector(self, revision: str) -> Injector | str:
        return self.injector_for(revision)


def view_from_snapshot(
    snapshot: ClusterSnapshot, mesh_config_maps: Sequence[Mapping[str, Any]] = ()
) -> RolloutView:
    """A cluster's view: injectors rebuilt from the revisions' ConfigMaps (memoised)."""
    built: dict[str, Injector | str] = {}

    def injector_for(revision: str) -> Injector | str:
        if revision not in built:
            built[revision] = _build_injector(snapshot, mesh_config_maps, revision)
        return built[revision]

    return RolloutView(
        namespace_labels={name_of(n): labels_of(n) for n in snapshot.namespaces},
        pods=snapshot.pods,
        entries=read_live_webhooks(snapshot.webhook_configurations).entries,
        injector_for=injector_for,
    )


def _data(config_maps: Sequence[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    for config_map in config_maps:
        if name_of(config_map) == name and namespace_of(config_map) in ("", naming.NAMESPACE):
            data = config_map.get("data")
            return data if isinstance(data, Mapping) else {}
    return None


def _parse(text: Any, what: str) -> Any:
    if text is None:
        return {}
    if not isinstance(text, str):
        raise ValueError(f"{what} is not text")
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return yaml.safe_load(text) or {}


def _build_injector(
    snapshot: ClusterSnapshot, mesh_config_maps: Sequence[Mapping[str, Any]], revision: str
) -> Injector | str:
    injector_name = naming.injector_configmap_name(revision)
    data = _data(snapshot.injector_config_maps, injector_name)
    if data is None:
        return f"ConfigMap {naming.NAMESPACE}/{injector_name} not found"
    mesh_data = _data(mesh_config_maps, naming.mesh_configmap_name(revision)) or {}
    try:
        settings = InjectorSettings(
            revision=revision,
            config=InjectorConfig.model_validate(_parse(data.get("config"), "config")),
            values=InjectorValues.model_validate(_parse(data.get("values"), "values")),
            mesh=MeshConfig.model_validate(_parse(mesh_data.get("mesh"), "mesh")),
        )
        return Injector(settings)
    except (ValueError, ValidationError, yaml.YAMLError, TemplateError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"ConfigMap {naming.NAMESPACE}/{injector_name} is not usable: {first}"


def plan_namespace(
    view: RolloutView, namespace: str, *, revision: str | None = None
) -> list[PodPlan]:
    """A plan for every pod of `namespace`, in name order. With `revision`, only pods whose
    namespace selects that revision are planned; the others are skipped, saying why."""
    namespace_labels = view.namespace_labels.get(namespace, {})
    plans: list[PodPlan] = []
    pods = sorted((p for p in view.pods if namespace_of(p) == namespace), key=name_of)
    for pod in pods:
        match = match_webhooks(view.entries, namespace_labels, pod_labels(pod))
        if match.entry is None:
            plans.append(plan_pod(pod, None, selection=match.reason))
            continue
        selected = match.entry.revision
        selection = match.reason
        if revision is not None and selected != revision:
            plans.append(_skip(pod, selected, f"{selection}, not revision {revision}"))
            continue
        injector = view.injector(selected)
        if isinstance(injector, str):
            plans.append(_skip(pod, selected, f"revision {selected}: {injector}"))
            continue
        plans.append(plan_pod(pod, injector, selection=selection))
    return plans


def _skip(pod: Mapping[str, Any], revision: str, reason: str) -> PodPlan:
    return PodPlan(
        namespace=namespace_of(pod),
        name=name_of(pod),
        workload=workload_of(pod),
        action="skip",
        current_revision=sidecar_revision(pod),
        target_revision=revision,
        reasons=(reason,),
    )


def without_injection(view: RolloutView, namespace: str) -> bool:
    """No webhook would inject a plain pod here: the namespace is not the mesh's business."""
    labels = view.namespace_labels.get(namespace, {})
    return match_webhooks(view.entries, labels, {}).entry is None
