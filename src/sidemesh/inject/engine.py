"""The injector: one object per revision holding parsed configuration and compiled templates.

`inject` is the pure transformation (pod in, injected pod out); `admit` wraps it in the
server-side decision and the JSON patch and never raises: any failure becomes a denied
Outcome whose reason names what to fix.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from pathlib import Path
from typing import Any

import orjson

from sidemesh.api import names
from sidemesh.api.config import load_injector_config, load_injector_values, load_mesh_config
from sidemesh.inject.annotations import InvalidAnnotation
from sidemesh.inject.context import build_context
from sidemesh.inject.decision import Decision, pod_annotations, should_inject
from sidemesh.inject.identity import Workload
from sidemesh.inject.memo import Memo
from sidemesh.inject.merge import apply_template, combine_templates, reorder
from sidemesh.inject.outcome import Outcome
from sidemesh.inject.params import (
    InjectionParams,
    after_template,
    native_sidecar_requested,
    read_params,
)
from sidemesh.inject.patch import encode_patch
from sidemesh.inject.pod_checks import pod_warnings
from sidemesh.inject.probes import rewrite_probes
from sidemesh.inject.prometheus import merge_annotations
from sidemesh.inject.settings import NATIVE_SIDECAR_SINCE, InjectorSettings
from sidemesh.inject.status import (
    injected_names,
    overrides_annotation,
    status_annotation,
    uninject,
)
from sidemesh.inject.template import TemplateError, TemplateSet
from sidemesh.inject.warnings import InjectionWarning, no_native_sidecars

log = logging.getLogger(__name__)

__all__ = ["InjectionError", "Injector", "InjectorSettings"]


class InjectionError(Exception):
    """The pod cannot be injected as it is; the message says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_pod_shape(pod: Any) -> None:
    """Enough structure to inject safely; the API server guarantees it, other callers may not."""
    if not isinstance(pod, dict):
        raise InjectionError("malformed-pod", "the object is not a JSON object")
    metadata = pod.get("metadata", {})
    if not isinstance(metadata, dict):
        raise InjectionError("malformed-pod", "metadata is not an object")
    for field in ("labels", "annotations"):
        value = metadata.get(field)
        if value is not None and not (
            isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        ):
            raise InjectionError("malformed-pod", f"metadata.{field} is not a map of strings")
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        raise InjectionError("malformed-pod", "spec is missing or not an object")
    for field in ("containers", "initContainers", "volumes"):
        items = spec.get(field)
        if items is None:
            continue
        if not isinstance(items, list) or not all(
            isinstance(i, dict) and isinstance(i.get("name"), str) for i in items
        ):
            raise InjectionError("malformed-pod", f"spec.{field} must be a list of named objects")
    if not spec.get("containers"):
        raise InjectionError("malformed-pod", "spec.containers is empty")


def injection_params(pod: dict[str, Any], settings: InjectorSettings) -> InjectionParams:
    """The pod's validated parameters under `settings`. Raises InvalidAnnotation."""
    params = read_params(
        pod_annotations(pod),
        values=settings.values,
        mesh=settings.mesh,
        default_templates=settings.config.default_templates,
    )
    if params.native_sidecar and not settings.native_sidecars_supported:
        params = dataclasses.replace(params, native_sidecar=False)  # see native_fallback
    return params


def injection_warnings(
    pod: dict[str, Any], settings: InjectorSettings
) -> tuple[InjectionWarning, ...]:
    """What in the pod will not behave as expected once injected (check-inject's view; the
    webhook and kube-inject get the same from `Injector.inject_with_warnings`). Raises
    InvalidAnnotation, as admission would deny the pod."""
    base = uninject(pod)
    return tuple(pod_warnings(base, injection_params(base, settings)))


class Injector:
    def __init__(self, settings: InjectorSettings | None = None, *, memo_size: int = 256) -> None:
        self.settings = settings or InjectorSettings()
        self.templates = TemplateSet(self.settings.config.templates)
        self._outcomes: Memo[bytes, Outcome] = Memo(memo_size)

    @property
    def revision(self) -> str:
        return self.settings.revision

    @classmethod
    def from_files(
        cls,
        *,
        revision: str = "default",
        injector_config: Path | None = None,
        mesh_config: Path | None = None,
        values: Path | None = None,
        server_version: tuple[int, int] | None = None,
    ) -> Injector:
        """Raises ConfigError (naming the file) or TemplateError (naming the template)."""
        return cls(
            InjectorSettings(
                revision=revision,
                config=load_injector_config(injector_config),
                values=load_injector_values(values),
                mesh=load_mesh_config(mesh_config),
                server_version=server_version,
            )
        )

    def decide(self, pod: dict[str, Any], namespace: str, *, manual: bool = False) -> Decision:
        return should_inject(pod, namespace, self.settings.config, manual=manual)

    def params(self, pod: dict[str, Any]) -> InjectionParams:
        return injection_params(pod, self.settings)

    def native_fallback(self, pod: dict[str, Any]) -> tuple[InjectionWarning, ...]:
        """The warning for a native sidecar asked for on a server that has none (injected
        the classic way instead); empty when there is nothing to say."""
        version = self.settings.server_version
        if version is None or self.settings.native_sidecars_supported:
            return ()
        annotations = pod_annotations(pod)
        if not native_sidecar_requested(annotations, self.settings.values):
            return ()
        asked = (
            f"annotation {names.ANNOTATION_NATIVE_SIDECAR}="
            f"{annotations[names.ANNOTATION_NATIVE_SIDECAR]}"
            if names.ANNOTATION_NATIVE_SIDECAR in annotations
            else "sidecarInjectorWebhook.nativeSidecar=true"
        )
        return (no_native_sidecars(asked, version, ".".join(map(str, NATIVE_SIDECAR_SINCE))),)

    def inject(
        self,
        pod: dict[str, Any],
        namespace: str,
        *,
        cluster_id: str | None = None,
        network: str | None = None,
        workload: Workload | None = None,
    ) -> dict[str, Any]:
        """The injected pod; `workload` overrides what owner references say (kube-inject).

        Raises InjectionError, InvalidAnnotation or TemplateError."""
        injected, _ = self.inject_with_warnings(
            pod, namespace, cluster_id=cluster_id, network=network, workload=workload
        )
        return injected

    def inject_with_warnings(
        self,
        pod: dict[str, Any],
        namespace: str,
        *,
        cluster_id: str | None = None,
        network: str | None = None,
        workload: Workload | None = None,
    ) -> tuple[dict[str, Any], tuple[InjectionWarning, ...]]:
        """`inject`, and what in the pod will not behave as expected (SM11xx warnings)."""
        check_pod_shape(pod)
        base = uninject(pod)
        params = self.params(base)
        user_proxy = next(
            (c for c in base["spec"]["containers"] if c.get("name") == names.CONTAINER_PROXY), None
        )
        context = build_context(
            base, namespace, params, self.settings,
            cluster_id=cluster_id, network=network, workload=workload,
        )  # fmt: skip
        self._check_template_names(base, params)
        rendered = combine_templates(
            self.templates.render(name, context) for name in params.templates
        )
        applied = apply_template(base, rendered, user_proxy)
        overrides = overrides_annotation(user_proxy, applied.merged_originals)
        injected = self._post_process(
            applied.pod, after_template(params, rendered), injected_names(rendered, base),
            overrides,
        )  # fmt: skip
        return injected, tuple(pod_warnings(base, params))

    def _check_template_names(self, pod: dict[str, Any], params: InjectionParams) -> None:
        """A template the pod asks for by annotation must exist; say which annotation asked."""
        requested = pod_annotations(pod).get(names.ANNOTATION_TEMPLATES)
        unknown = [t for t in params.templates if t not in self.templates.names]
        if unknown and isinstance(requested, str):
            raise InvalidAnnotation(
                names.ANNOTATION_TEMPLATES,
                requested,
                f"no template named {', '.join(unknown)} "
                f"(have: {', '.join(sorted(self.templates.names))})",
            )

    def _post_process(
        self,
        pod: dict[str, Any],
        params: InjectionParams,
        added: dict[str, list[str]],
        overrides: str | None,
    ) -> dict[str, Any]:
        spec: dict[str, Any] = pod["spec"]
        metadata: dict[str, Any] = pod["metadata"]
        annotations: dict[str, str] = dict(metadata.get("annotations") or {})
        proxy_env: list[dict[str, str]] = []

        if params.rewrite_probes:
            originals = rewrite_probes(spec, params.status_port)
            if originals:
                proxy_env.append(
                    {"name": names.ENV_KUBE_APP_PROBERS, "value": orjson.dumps(originals).decode()}
                )
        if params.merge_metrics:
            merged = merge_annotations(annotations, params.status_port)
            if merged is not None:
                annotations, original = merged
                proxy_env.append({"name": names.ENV_PROMETHEUS_ANNOTATIONS, "value": original})
        if proxy_env:
            self._add_proxy_env(spec, proxy_env)
        if overrides is not None:
            annotations[names.ANNOTATION_PROXY_OVERRIDES] = overrides

        reorder(
            spec,
            native_sidecar=params.native_sidecar,
            hold_application=params.hold_application,
            outside_mesh=params.bypass_init_containers,
        )
        annotations.update(self.settings.config.injected_annotations)
        annotations[names.ANNOTATION_STATUS] = status_annotation(revision=self.revision, **added)
        pod["metadata"] = {**metadata, "annotations": annotations}
        return pod

    @staticmethod
    def _add_proxy_env(spec: dict[str, Any], extra: list[dict[str, str]]) -> None:
        for field in ("containers", "initContainers"):
            items = spec.get(field)
            if not isinstance(items, list):
                continue
            for index, container in enumerate(items):
                if container.get("name") == names.CONTAINER_PROXY:
                    taken = {e["name"] for e in extra}
                    env = [e for e in container.get("env") or [] if e.get("name") not in taken]
                    items[index] = {**container, "env": env + extra}
                    return

    def admit(
        self,
        pod: dict[str, Any],
        namespace: str,
        *,
        cluster_id: str | None = None,
        network: str | None = None,
    ) -> Outcome:
        """Decide, inject and diff. Never raises. The returned Outcome (and its `pod`) may be
        shared with later identical admissions: treat it as read-only."""
        key = self._outcomes.key(namespace, cluster_id, network, pod)
        outcome = self._outcomes.get(key)
        if outcome is None:
            outcome = self._admit(pod, namespace, cluster_id=cluster_id, network=network)
            if outcome.code != "internal-error":
                self._outcomes.put(key, outcome)
        return outcome

    def _admit(
        self,
        pod: dict[str, Any],
        namespace: str,
        *,
        cluster_id: str | None,
        network: str | None,
    ) -> Outcome:
        revision = self.revision
        try:
            check_pod_shape(pod)  # before deciding: the decision reads labels and spec
            decision = self.decide(pod, namespace)
            if not decision.inject:
                return Outcome(
                    "skipped", decision.code, decision.reason, revision, warnings=decision.warnings
                )
            injected, found = self.inject_with_warnings(
                pod, namespace, cluster_id=cluster_id, network=network
            )
            patch = encode_patch(pod, injected)
        except InjectionError as exc:
            return Outcome("denied", exc.code, str(exc), revision)
        except InvalidAnnotation as exc:
            return Outcome("denied", "invalid-annotation", str(exc), revision)
        except TemplateError as exc:
            return Outcome("denied", "template-error", str(exc), revision)
        except Exception as exc:  # fail closed, never crash the server
            log.exception("injection failed unexpectedly")
            return Outcome(
                "denied",
                "internal-error",
                f"injection failed: {exc.__class__.__name__}: {exc}",
                revision,
            )
        return Outcome(
            "injected", decision.code, decision.reason, revision,
            patch=patch, pod=injected,
            warnings=decision.warnings + self.native_fallback(pod) + found,
            patch_base64=base64.b64encode(patch).decode("ascii"),
        )  # fmt: skip
