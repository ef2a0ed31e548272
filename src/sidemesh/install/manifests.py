"""Everything `sidemesh install` creates for one revision, in the order it is applied.

Pure: values in, Kubernetes objects (plain dicts) out. The same objects are printed by
`install --dry-run`, applied by `install`, and rendered by the Helm chart.
"""

from __future__ import annotations

from typing import Any

from sidemesh.api import names
from sidemesh.inject.webhooks import revision_webhooks
from sidemesh.install import crds, naming, rbac, workload
from sidemesh.install.values import InstallValues
from sidemesh.install.webhooks import (
    WebhookSettings,
    deactivated,
    validating_webhook_configuration,
    webhook_configuration,
)

# Dependency order: what a later object refers to exists before it. The webhook comes last:
# it fails closed, so it must not exist before the Deployment that answers it.
APPLY_ORDER: tuple[str, ...] = (
    "Namespace",
    "CustomResourceDefinition",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ConfigMap",
    "Service",
    "Deployment",
    "PodDisruptionBudget",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
)


def namespace() -> dict[str, Any]:
    """The shared control-plane namespace: labelled as ours, but not by any revision."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": naming.NAMESPACE,
            "labels": {naming.LABEL_PART_OF: naming.PART_OF},
        },
    }


def injector_webhook(
    values: InstallValues, revision: str, *, default_tag_exists: bool = False
) -> dict[str, Any]:
    """`istio-sidecar-injector[-REV]`, from `revision_webhooks`. For the default revision, a
    `default` tag takes over its entries, so the configuration is installed deactivated."""
    is_default = revision in ("", "default")
    settings = WebhookSettings(
        service_name=names.service_name(revision),
        timeout_seconds=values.sidecar_injector_webhook.timeout_seconds,
        reinvocation_policy=values.sidecar_injector_webhook.reinvocation_policy,
        url=values.istiod_remote.injection_url,
    )
    labels = {**naming.install_labels(revision), "app": "sidecar-injector"}
    configuration = webhook_configuration(
        names.webhook_configuration_name(revision),
        revision_webhooks(revision, default=is_default),
        settings,
        labels=labels,
    )
    return deactivated(configuration) if is_default and default_tag_exists else configuration


def validator_webhook(values: InstallValues, revision: str) -> dict[str, Any]:
    """`istio-validator[-REV]-istio-system`, fail-open until the control plane turns it to
    Fail (see `install.webhooks.validating_webhook_configuration`)."""
    settings = WebhookSettings(
        service_name=names.service_name(revision),
        failure_policy="Ignore",
        url=naming.validation_url(values.istiod_remote.injection_url),
    )
    labels = {**naming.install_labels(revision), "app": "istiod", "istio": "istiod"}
    return validating_webhook_configuration(
        naming.validator_configuration_name(revision), revision, settings, labels=labels
    )


def render(
    values: InstallValues, revision: str, *, default_tag_exists: bool = False
) -> list[dict[str, Any]]:
    """All objects of one revision's install, in apply order: first what every revision
    shares (the Namespace, the CRDs; no revision label, uninstall keeps the CRDs)."""
    objects: list[dict[str, Any]] = [
        namespace(),
        *crds.custom_resource_definitions(),
        rbac.service_account(revision),
        rbac.cluster_role(revision, sidecar_restarter=values.sidecar_restarter.enabled),
        rbac.cluster_role_binding(revision),
        rbac.role(revision),
        rbac.role_binding(revision),
        *rbac.credential_readers(revision, values.gateways.credential_namespaces),
        workload.injector_configmap(values, revision),
        workload.mesh_configmap(values, revision),
        workload.service(revision, plaintext_xds=values.pilot.plaintext_xds.enabled),
        workload.deployment(values, revision),
    ]
    if values.global_.default_pod_disruption_budget.enabled:
        objects.append(workload.disruption_budget(revision))
    objects.append(injector_webhook(values, revision, default_tag_exists=default_tag_exists))
    objects.append(validator_webhook(values, revision))
    return sorted(objects, key=lambda o: APPLY_ORDER.index(o["kind"]))


def describe(obj: dict[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    where = f" -n {metadata['namespace']}" if metadata.get("namespace") else ""
    return f"{obj.get('kind')}/{metadata.get('name')}{where}"
