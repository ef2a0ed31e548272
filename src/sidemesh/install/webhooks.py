"""MutatingWebhookConfigurations as Kubernetes objects, from and back to `WebhookEntry` data.

`inject.webhooks` owns the selector layout; this module only writes those entries into the
Kubernetes shape (and reads live configurations back into entries, so check-inject and the
analyzers evaluate what is really installed rather than what we think we installed).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from sidemesh.api import names
from sidemesh.api.selectors import LabelSelector
from sidemesh.inject.webhooks import WebhookEntry
from sidemesh.install import naming

ADMISSION_API_VERSION = "admissionregistration.k8s.io/v1"
KIND = "MutatingWebhookConfiguration"
POD_CREATE_RULE: dict[str, Any] = {
    "operations": ["CREATE"],
    "apiGroups": [""],
    "apiVersions": ["v1"],
    "resources": ["pods"],
}
NEVER_MATCH: dict[str, Any] = {"matchLabels": {naming.LABEL_DEACTIVATED: naming.DEACTIVATED_VALUE}}
VALIDATING_KIND = "ValidatingWebhookConfiguration"
# Istio's configuration API groups, every version they serve (`*`: a version added later is
# validated too), every resource but no subresource (status writes are not configuration).
VALIDATED_GROUPS: tuple[str, ...] = (
    "networking.istio.io",
    "security.istio.io",
    "telemetry.istio.io",
)
CONFIG_RULE: dict[str, Any] = {
    "operations": ["CREATE", "UPDATE"],
    "apiGroups": list(VALIDATED_GROUPS),
    "apiVersions": ["*"],
    "resources": ["*"],
}
VALIDATOR_WEBHOOK_NAME = "rev.validation.istio.io"


@dataclass(frozen=True)
class WebhookSettings:
    """What every entry of one configuration shares."""

    service_name: str
    timeout_seconds: int = 10
    reinvocation_policy: Literal["Never", "IfNeeded"] = "Never"
    failure_policy: Literal["Fail", "Ignore"] = "Fail"
    ca_bundle: str | None = None  # base64 PEM; the control plane fills it in
    namespace: str = naming.NAMESPACE
    url: str = ""  # istiodRemote.injectionURL: reached by URL instead of the Service


def client_config(settings: WebhookSettings, path: str) -> dict[str, Any]:
    """How the API server reaches the control plane: its URL, or its Service at `path`."""
    config: dict[str, Any] = (
        {"url": settings.url}
        if settings.url
        else {
            "service": {
                "name": settings.service_name,
                "namespace": settings.namespace,
                "path": path,
                "port": naming.WEBHOOK_SERVICE_PORT,
            }
        }
    )
    if settings.ca_bundle:
        config["caBundle"] = settings.ca_bundle
    return config


def webhook_item(entry: WebhookEntry, settings: WebhookSettings) -> dict[str, Any]:
    return {
        "name": entry.name,
        "clientConfig": client_config(settings, naming.WEBHOOK_PATH),
        "rules": [copy.deepcopy(POD_CREATE_RULE)],
        "failurePolicy": settings.failure_policy,
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": settings.timeout_seconds,
        "reinvocationPolicy": settings.reinvocation_policy,
        "namespaceSelector": entry.namespace_selector.to_kubernetes(),
        "objectSelector": entry.object_selector.to_kubernetes(),
    }


def webhook_configuration(
    name: str,
    entries: Sequence[WebhookEntry],
    settings: WebhookSettings,
    *,
    labels: Mapping[str, str],
) -> dict[str, Any]:
    return {
        "apiVersion": ADMISSION_API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "labels": dict(labels)},
        "webhooks": [webhook_item(e, settings) for e in entries],
    }


def deactivated(configuration: dict[str, Any]) -> dict[str, Any]:
    """The configuration with selectors that never match: registered, but injecting nothing
    (what a `default` tag does to the default revision's own configuration)."""
    out = copy.deepcopy(configuration)
    for item in out.get("webhooks") or []:
        item["namespaceSelector"] = copy.deepcopy(NEVER_MATCH)
        item["objectSelector"] = copy.deepcopy(NEVER_MATCH)
    return out


def is_deactivated(configuration: Mapping[str, Any]) -> bool:
    items = configuration.get("webhooks") or []
    return bool(items) and all(
        isinstance(i, dict) and i.get("namespaceSelector") == NEVER_MATCH for i in items
    )


def validator_object_selector(revision: str) -> dict[str, Any]:
    """Istio's split of configuration between revisions: a revision validates the objects
    labelled `istio.io/rev: REV`; the default revision those without the label."""
    if revision in ("", "default"):
        return {"matchExpressions": [{"key": names.LABEL_REVISION, "operator": "DoesNotExist"}]}
    return {"matchLabels": {names.LABEL_REVISION: revision}}


def validating_webhook_configuration(
    name: str, revision: str, settings: WebhookSettings, *, labels: Mapping[str, str]
) -> dict[str, Any]:
    """`istio-validator[-REV]-istio-system`: Istio configuration sent to the control plane's
    `/validate`. Installed `failurePolicy: Ignore` and without caBundle; the control plane's
    leader fills the bundle in and turns it to `Fail` once its webhook is seen refusing an
    invalid object (so an install never blocks configuration writes on a webhook that does
    not answer yet, and a running one never lets invalid configuration through)."""
    item = {
        "name": VALIDATOR_WEBHOOK_NAME,
        "clientConfig": client_config(settings, naming.VALIDATION_PATH),
        "rules": [copy.deepcopy(CONFIG_RULE)],
        "failurePolicy": settings.failure_policy,
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": settings.timeout_seconds,
        "objectSelector": validator_object_selector(revision),
    }
    return {
        "apiVersion": ADMISSION_API_VERSION,
        "kind": VALIDATING_KIND,
        "metadata": {"name": name, "labels": dict(labels)},
        "webhooks": [item],
    }


# -- reading live configurations back ----------------------------------------------------


@dataclass(frozen=True)
class LiveWebhooks:
    """Entries read from live configurations, and what could not be read."""

    entries: tuple[WebhookEntry, ...]
    problems: tuple[tuple[str, str], ...]  # (configuration name, what is wrong)


def _metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, Mapping) else {}


def _handles_pod_creation(item: Mapping[str, Any]) -> bool:
    for rule in item.get("rules") or []:
        if not isinstance(rule, Mapping):
            continue
        operations = rule.get("operations") or []
        groups = rule.get("apiGroups") or []
        resources = rule.get("resources") or []
        if (
            ("CREATE" in operations or "*" in operations)
            and ("" in groups or "*" in groups)
            and ("pods" in resources or "*" in resources)
        ):
            return True
    return False


def injector_revision(configuration: Mapping[str, Any]) -> str | None:
    labels = _metadata(configuration).get("labels") or {}
    value = labels.get(names.LABEL_REVISION) if isinstance(labels, Mapping) else None
    return value if isinstance(value, str) else None


def is_injector_configuration(configuration: Mapping[str, Any]) -> bool:
    """Ours or Istio's: labelled with a revision (as `istioctl` also recognises them)."""
    return injector_revision(configuration) is not None


def read_live_webhooks(configurations: Sequence[Mapping[str, Any]]) -> LiveWebhooks:
    """Entries of every injector configuration that handle pod creation, in name order."""
    entries: list[WebhookEntry] = []
    problems: list[tuple[str, str]] = []
    ordered = sorted(configurations, key=lambda c: str(_metadata(c).get("name", "")))
    for configuration in ordered:
        if not is_injector_configuration(configuration):
            continue
        name = str(_metadata(configuration).get("name", ""))
        labels = _metadata(configuration).get("labels") or {}
        revision = injector_revision(configuration) or "default"
        tag = labels.get(names.LABEL_TAG) if isinstance(labels, Mapping) else None
        for item in configuration.get("webhooks") or []:
            if not isinstance(item, Mapping) or not _handles_pod_creation(item):
                continue
            try:
                entry = WebhookEntry(
                    name=str(item.get("name", "")),
                    namespace_selector=LabelSelector.model_validate(
                        item.get("namespaceSelector") or {}
                    ),
                    object_selector=LabelSelector.model_validate(item.get("objectSelector") or {}),
                    revision=revision,
                    configuration=name,
                    tag=tag if isinstance(tag, str) else None,
                )
            except ValidationError as exc:
                problems.append((name, f"webhook {item.get('name')}: unreadable selector: {exc}"))
                continue
            entries.append(entry)
    return LiveWebhooks(entries=tuple(entries), problems=tuple(problems))


def service_reference(item: Mapping[str, Any]) -> tuple[str, str] | None:
    """(namespace, name) of the Service a webhook item calls, if it calls one."""
    client_config = item.get("clientConfig")
    service = client_config.get("service") if isinstance(client_config, Mapping) else None
    if not isinstance(service, Mapping):
        return None
    return str(service.get("namespace", "")), str(service.get("name", ""))
