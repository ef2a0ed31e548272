"""Names and labels of what an install creates, per revision.

Every object an install (or the control plane itself) creates for a revision carries
`install.sidemesh.io/revision: REV`; uninstall deletes by that label, so it removes exactly one
revision's objects and never another's. Revision tags are not install objects: they carry
`istio.io/tag` and `istio.io/rev` but not the install label.
"""

from __future__ import annotations

from typing import Final

from sidemesh.api import names

FIELD_MANAGER: Final = "sidemesh"
LABEL_INSTALL_REVISION: Final = "install.sidemesh.io/revision"
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"
PART_OF: Final = "sidemesh"
# Istio's "never matches" selector for a webhook that must stay registered but inject nothing.
LABEL_DEACTIVATED: Final = "istio.io/deactivated"
DEACTIVATED_VALUE: Final = "never-match"

NAMESPACE: Final = names.CONTROL_PLANE_NAMESPACE
WEBHOOK_PATH: Final = "/inject"
VALIDATION_PATH: Final = "/validate"  # the same server, Istio's configuration validation path
WEBHOOK_SERVICE_PORT: Final = 443

INJECTOR_CONFIG_DIR: Final = "/etc/istio/inject"
MESH_CONFIG_DIR: Final = "/etc/istio/config"
WEBHOOK_CERT_DIR: Final = "/var/run/sidemesh/webhook"


def revision_label(revision: str) -> str:
    return revision or "default"


def _suffix(revision: str) -> str:
    return "" if revision in ("", "default") else f"-{revision}"


def deployment_name(revision: str) -> str:
    return names.service_name(revision)


def service_account_name(revision: str) -> str:
    return names.service_name(revision)


def cluster_role_name(revision: str) -> str:
    return f"istiod-clusterrole{_suffix(revision)}-{NAMESPACE}"


def role_name(revision: str) -> str:
    return names.service_name(revision)


def injector_configmap_name(revision: str) -> str:
    return f"istio-sidecar-injector{_suffix(revision)}"


def mesh_configmap_name(revision: str) -> str:
    return f"istio{_suffix(revision)}"


def webhook_secret_name(revision: str) -> str:
    return f"{names.service_name(revision)}-webhook-tls"


def leader_lease_name(revision: str) -> str:
    return f"{names.service_name(revision)}-leader"


def validator_configuration_name(revision: str) -> str:
    """Istio's ValidatingWebhookConfiguration name: `istio-validator[-REV]-istio-system`."""
    return f"istio-validator{_suffix(revision)}-{NAMESPACE}"


def validation_url(injection_url: str) -> str:
    """The validation URL of a control plane reached by URL (`istiodRemote.injectionURL`):
    the same server, path `/validate`; empty when the webhook is reached through the Service."""
    if not injection_url:
        return ""
    scheme, _, rest = injection_url.partition("://")
    host = rest.split("/", 1)[0].split("?", 1)[0]
    return f"{scheme}://{host}{VALIDATION_PATH}"


def tag_configuration_name(tag: str) -> str:
    return f"istio-revision-tag-{tag}"


def install_labels(revision: str) -> dict[str, str]:
    """Labels on every object an install creates for `revision`."""
    rev = revision_label(revision)
    return {
        LABEL_PART_OF: PART_OF,
        LABEL_INSTALL_REVISION: rev,
        names.LABEL_REVISION: rev,
    }


def pod_labels(revision: str) -> dict[str, str]:
    """The control plane's pod labels, as `kubectl get pods -l app=istiod --show-labels`
    shows them. `sidecar.istio.io/inject: "false"` keeps the webhook from injecting (or, while
    no replica is up, blocking) its own pods: their `istio.io/rev` label alone would match the
    revision's object-level webhook entry in an unlabelled istio-system."""
    return {
        "app": "istiod",
        names.LABEL_REVISION: revision_label(revision),
        "istio": "istiod",
        names.LABEL_INJECT: "false",
    }


def selector_labels(revision: str) -> dict[str, str]:
    return {"app": "istiod", names.LABEL_REVISION: revision_label(revision)}
