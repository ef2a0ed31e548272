"""How injection looks in a cluster snapshot: which webhook would inject a pod now, with which
revision's policy, and which revision (if any) injected it when it was created."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import orjson
import yaml
from pydantic import ValidationError

from sidemesh.api import names
from sidemesh.api.config import InjectorConfig
from sidemesh.inject.check import CheckResult, check_object
from sidemesh.inject.decision import pod_labels
from sidemesh.inject.settings import InjectorSettings
from sidemesh.inject.webhooks import WebhookEntry, WebhookMatch, match_webhooks
from sidemesh.install.webhooks import LiveWebhooks, read_live_webhooks
from sidemesh.kube.snapshot import ClusterSnapshot, labels_of, metadata, namespace_of

INJECTED_CONTAINERS = frozenset({names.CONTAINER_PROXY, names.CONTAINER_INIT})


def _containers(pod: Mapping[str, Any], field: str) -> list[Mapping[str, Any]]:
    spec = pod.get("spec")
    items = spec.get(field) if isinstance(spec, Mapping) else None
    return [c for c in items or [] if isinstance(c, Mapping)]


def has_proxy(pod: Mapping[str, Any]) -> bool:
    return any(
        c.get("name") == names.CONTAINER_PROXY
        for field in ("containers", "initContainers")
        for c in _containers(pod, field)
    )


def injected_revision(pod: Mapping[str, Any]) -> str | None:
    """The revision named by the pod's `sidecar.istio.io/status`; "unknown" for a proxy
    without one (injected by hand or by something else); None for a pod without a proxy."""
    annotations = metadata(pod).get("annotations")
    raw = annotations.get(names.ANNOTATION_STATUS) if isinstance(annotations, Mapping) else None
    if isinstance(raw, str):
        try:
            status = orjson.loads(raw)
        except orjson.JSONDecodeError:
            status = None
        if isinstance(status, dict) and isinstance(status.get("revision"), str):
            return str(status["revision"])
    return "unknown" if has_proxy(pod) else None


def is_finished(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status")
    phase = status.get("phase") if isinstance(status, Mapping) else None
    return phase in ("Succeeded", "Failed")


def _injector_config(config_map: Mapping[str, Any]) -> InjectorConfig | None:
    data = config_map.get("data")
    text = data.get("config") if isinstance(data, Mapping) else None
    if not isinstance(text, str):
        return None
    try:
        return InjectorConfig.model_validate(yaml.safe_load(text) or {})
    except (yaml.YAMLError, ValidationError):
        return None


@dataclass(frozen=True)
class Expectation:
    """What the cluster would do with this pod if it were created now."""

    result: CheckResult
    match: WebhookMatch

    @property
    def revision(self) -> str | None:
        return self.result.revision if self.result.injected else None


class InjectionView:
    def __init__(self, snapshot: ClusterSnapshot) -> None:
        self.snapshot = snapshot

    @cached_property
    def live(self) -> LiveWebhooks:
        return read_live_webhooks(self.snapshot.webhook_configurations)

    @property
    def entries(self) -> tuple[WebhookEntry, ...]:
        return self.live.entries

    @cached_property
    def settings(self) -> dict[str, InjectorSettings]:
        """Each installed revision's server-side policy, from its injector ConfigMap."""
        settings: dict[str, InjectorSettings] = {}
        for config_map in self.snapshot.injector_config_maps:
            revision = labels_of(config_map).get(names.LABEL_REVISION)
            config = _injector_config(config_map)
            if revision and config is not None:
                settings[revision] = InjectorSettings(revision=revision, config=config)
        return settings

    @cached_property
    def revisions(self) -> tuple[str, ...]:
        """Installed revisions (not tags), from their own webhook configurations."""
        return tuple(sorted({e.revision for e in self.entries if e.tag is None}))

    def expect(self, obj: Mapping[str, Any], namespace: str | None = None) -> Expectation | None:
        """Check a pod or workload as if created now in its (or the given) namespace."""
        ns = namespace or namespace_of(obj) or "default"
        namespace_labels = self.snapshot.namespace_labels(ns)
        result = check_object(
            dict(obj), entries=self.entries, settings_by_revision=self.settings,
            namespace_labels=namespace_labels, namespace=ns,
        )  # fmt: skip
        if result is None:
            return None
        template = obj if obj.get("kind", "Pod") == "Pod" else _template(obj)
        match = match_webhooks(self.entries, namespace_labels, pod_labels(template))
        return Expectation(result=result, match=match)

    def namespace_match(self, namespace: str) -> WebhookMatch:
        """Which webhook a pod without labels would meet in `namespace`."""
        return match_webhooks(self.entries, self.snapshot.namespace_labels(namespace), {})


def _template(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    from sidemesh.inject.workloads import as_pod, pod_site

    site = pod_site(dict(obj))
    return as_pod(site) if site is not None else obj


def pod_with_kind(pod: Mapping[str, Any]) -> dict[str, Any]:
    """lightkube's dicts carry kind; crafted ones may not."""
    return {"kind": "Pod", "apiVersion": "v1", **pod}
