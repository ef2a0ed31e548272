"""Install values: the injector's Istio-style values plus what only installing needs.

Spelled as Istio's istiod chart spells them (`pilot.replicaCount`, `meshConfig`,
`sidecarInjectorWebhook.neverInjectSelector`, `global.defaultPodDisruptionBudget.enabled`), so
an Istio values file mostly reads unchanged. Unknown keys are errors: a misspelt key in a
values file or a `--set` must stop the install before anything is applied, naming the key.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sidemesh.api import kube_names
from sidemesh.api.config import (
    GlobalValues,
    InjectorConfig,
    InjectorValues,
    MeshConfig,
    ResourceList,
    Resources,
    SidecarInjectorWebhookValues,
)
from sidemesh.api.selectors import LabelSelector


class _Values(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def _pilot_resources() -> Resources:
    return Resources(
        requests=ResourceList(cpu="200m", memory="256Mi"),
        limits=ResourceList(cpu="2000m", memory="1Gi"),
    )


class PlaintextXdsValues(_Values):
    """xDS without TLS or authentication on 15010 (`grpc-xds`): anyone who reaches the port
    reads the whole mesh configuration, so it is off unless asked for."""

    enabled: bool = False


class PilotValues(_Values):
    """The control-plane Deployment (`pilot` is Istio's name for istiod's settings)."""

    image: str = "sidemesh"
    hub: str = ""  # empty: global.hub
    tag: str = ""  # empty: global.tag
    replica_count: int = Field(2, alias="replicaCount", ge=1)
    resources: Resources = Field(default_factory=_pilot_resources)
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    tolerations: tuple[dict[str, Any], ...] = ()
    pod_annotations: dict[str, str] = Field(default_factory=dict, alias="podAnnotations")
    env: dict[str, str] = Field(default_factory=dict)
    priority_class_name: str = Field("", alias="priorityClassName")
    plaintext_xds: PlaintextXdsValues = Field(
        default_factory=PlaintextXdsValues, alias="plaintextXds"
    )


class IstiodRemoteValues(_Values):
    """Istio's `istiodRemote`: here only `injectionURL`, for a webhook the API server reaches by
    URL instead of through the Service (a control plane outside the cluster, or the test tier's
    API server on loopback). Its serving certificate must name the URL's host: run discovery
    with ISTIOD_CUSTOM_HOST set to it."""

    injection_url: str = Field("", alias="injectionURL", pattern=r"^(https://[^\s]+)?$")


class PodDisruptionBudgetValues(_Values):
    enabled: bool = True


class InstallGlobalValues(GlobalValues):
    default_pod_disruption_budget: PodDisruptionBudgetValues = Field(
        default_factory=PodDisruptionBudgetValues, alias="defaultPodDisruptionBudget"
    )


class InstallWebhookValues(SidecarInjectorWebhookValues):
    """The webhook's values plus the injector config Istio's chart takes from the same key."""

    never_inject_selector: tuple[LabelSelector, ...] = Field((), alias="neverInjectSelector")
    always_inject_selector: tuple[LabelSelector, ...] = Field((), alias="alwaysInjectSelector")
    injected_annotations: dict[str, str] = Field(default_factory=dict, alias="injectedAnnotations")
    default_templates: tuple[str, ...] = Field(("sidecar",), alias="defaultTemplates")
    templates: dict[str, str] = Field(default_factory=dict)


class SidecarRestarterValues(_Values):
    """The stale-sidecar restarter, a leader-only duty of discovery: restarts workloads whose
    sidecar is not what their namespace selects, through the Eviction API. Off by default."""

    enabled: bool = False


class GatewaysValues(_Values):
    """Where gateway credentials (Secrets named by a Gateway's `credentialName`) may live. The
    control plane reads Secrets only in these namespaces (a Role and RoleBinding in each: RBAC
    objects need the namespace to exist, so the default is only the control plane's own; add
    e.g. `istio-ingress` once it exists). No cluster-wide Secret access, ever."""

    credential_namespaces: list[str] = Field(
        default_factory=lambda: ["istio-system"], alias="credentialNamespaces"
    )

    @field_validator("credential_namespaces")
    @classmethod
    def _namespace_names(cls, value: list[str]) -> list[str]:
        for namespace in value:
            problems = kube_names.dns1123_label(namespace)
            if problems:
                raise ValueError(f"{namespace!r}: {'; '.join(problems)}")
        return list(dict.fromkeys(value))


class InstallValues(InjectorValues):
    global_: InstallGlobalValues = Field(default_factory=InstallGlobalValues, alias="global")
    sidecar_injector_webhook: InstallWebhookValues = Field(
        default_factory=InstallWebhookValues, alias="sidecarInjectorWebhook"
    )
    pilot: PilotValues = Field(default_factory=PilotValues)
    istiod_remote: IstiodRemoteValues = Field(
        default_factory=IstiodRemoteValues, alias="istiodRemote"
    )
    mesh_config: MeshConfig = Field(default_factory=MeshConfig, alias="meshConfig")
    sidecar_restarter: SidecarRestarterValues = Field(
        default_factory=SidecarRestarterValues, alias="sidecarRestarter"
    )
    gateways: GatewaysValues = Field(default_factory=GatewaysValues)

    def injector_values(self, revision: str) -> InjectorValues:
        """What the injector reads (its ConfigMap's `values`): the install-only keys dropped."""
        data = _project(InjectorValues, self.model_dump(by_alias=True, mode="json"))
        data["revision"] = revision
        return InjectorValues.model_validate(data)

    def injector_config(self) -> InjectorConfig:
        """What the injector reads as its `config`."""
        webhook = self.sidecar_injector_webhook
        return InjectorConfig(
            never_inject_selector=webhook.never_inject_selector,
            always_inject_selector=webhook.always_inject_selector,
            injected_annotations=webhook.injected_annotations,
            default_templates=webhook.default_templates,
            templates=webhook.templates,
        )

    def control_plane_image(self) -> str:
        pilot = self.pilot
        if "/" in pilot.image or ":" in pilot.image or "@" in pilot.image:
            return pilot.image  # already a full reference
        hub = pilot.hub or self.global_.hub
        tag = pilot.tag or self.global_.tag
        return f"{hub}/{pilot.image}:{tag}"


def _project(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """`data` (file spelling) restricted to the keys `model` knows, recursively."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key not in data:
            continue
        value = data[key]
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel) and isinstance(value, dict):
            value = _project(sub, value)
        out[key] = value
    return out


def default_values_document() -> dict[str, Any]:
    """The defaults as a values file spells them (the Helm chart's values.yaml)."""
    return InstallValues().model_dump(by_alias=True, mode="json")
