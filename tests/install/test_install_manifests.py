"""What `install` creates: valid Kubernetes objects, one revision's names, Istio's surface."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from sidemesh.api import names
from sidemesh.inject.webhooks import revision_webhooks
from sidemesh.install import manifests, naming
from sidemesh.install.overrides import load_install_values
from sidemesh.install.values import InstallValues

KUBE_VERSIONS = ("1.28", kubernetes_validate.utils.latest_version())


def _render(revision: str, *sets: str) -> list[dict[str, Any]]:
    values, chosen = load_install_values([], list(sets), revision=revision)
    return manifests.render(values, chosen)


def _by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize(
    "sets",
    [
        (),
        ("pilot.replicaCount=1", "global.defaultPodDisruptionBudget.enabled=false"),
        ("global.imagePullPolicy=Always", "global.imagePullSecrets={reg}",
         "pilot.nodeSelector.disk=ssd", "pilot.tolerations=[{key: k, operator: Exists}]",
         "pilot.podAnnotations.a=b", "pilot.env.X=y", "pilot.priorityClassName=high",
         "sidecarInjectorWebhook.reinvocationPolicy=IfNeeded",
         "sidecarInjectorWebhook.timeoutSeconds=5", "pilot.plaintextXds.enabled=true"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("revision", ["asm-173-3", "default"])
def test_every_object_validates_strictly(
    version: str, sets: tuple[str, ...], revision: str
) -> None:
    for obj in _render(revision, *sets):
        kubernetes_validate.validate(obj, version, strict=True)


def test_objects_come_in_dependency_order() -> None:
    kinds = [o["kind"] for o in _render("blue")]
    assert kinds == [
        "Namespace", *["CustomResourceDefinition"] * 9, "ServiceAccount", "ClusterRole",
        "ClusterRoleBinding", "Role", "Role", "RoleBinding", "RoleBinding", "ConfigMap",
        "ConfigMap", "Service",
        "Deployment", "PodDisruptionBudget", "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ]  # fmt: skip


def test_names_carry_the_revision() -> None:
    described = {manifests.describe(o) for o in _render("asm-173-3")}
    assert described == SHARED | {
        "ServiceAccount/istiod-asm-173-3 -n istio-system",
        "ClusterRole/istiod-clusterrole-asm-173-3-istio-system",
        "ClusterRoleBinding/istiod-clusterrole-asm-173-3-istio-system",
        "Role/istiod-asm-173-3 -n istio-system",
        "RoleBinding/istiod-asm-173-3 -n istio-system",
        "Role/istiod-asm-173-3-gateway-credentials -n istio-system",
        "RoleBinding/istiod-asm-173-3-gateway-credentials -n istio-system",
        "ConfigMap/istio-sidecar-injector-asm-173-3 -n istio-system",
        "ConfigMap/istio-asm-173-3 -n istio-system",
        "Service/istiod-asm-173-3 -n istio-system",
        "Deployment/istiod-asm-173-3 -n istio-system",
        "PodDisruptionBudget/istiod-asm-173-3 -n istio-system",
        "MutatingWebhookConfiguration/istio-sidecar-injector-asm-173-3",
        "ValidatingWebhookConfiguration/istio-validator-asm-173-3-istio-system",
    }


SHARED = {
    "Namespace/istio-system",
    "CustomResourceDefinition/peerauthentications.security.istio.io",
    *(f"CustomResourceDefinition/{plural}.networking.istio.io" for plural in (
        "destinationrules", "gateways", "serviceentries", "sidecars", "virtualservices")),
    *(f"CustomResourceDefinition/{plural}.security.istio.io" for plural in (
        "authorizationpolicies", "requestauthentications")),
    "CustomResourceDefinition/telemetries.telemetry.istio.io",
}  # fmt: skip


def test_two_revisions_share_only_the_namespace_and_the_crds() -> None:
    blue = {manifests.describe(o) for o in _render("blue")}
    green = {manifests.describe(o) for o in _render("green")}
    assert blue & green == SHARED
    shared = [o for o in _render("blue") if manifests.describe(o) in SHARED]
    assert [o for o in _render("green") if manifests.describe(o) in SHARED] == shared


def test_every_revision_object_carries_the_install_label() -> None:
    for obj in _render("blue"):
        labels = obj["metadata"]["labels"]
        if manifests.describe(obj) in SHARED:  # uninstall (by this label) must not find them
            assert naming.LABEL_INSTALL_REVISION not in labels
            assert labels[naming.LABEL_PART_OF] == naming.PART_OF
        else:
            assert labels[naming.LABEL_INSTALL_REVISION] == "blue"


def test_pods_show_the_revision_like_the_guide() -> None:
    (deployment,) = _by_kind(_render("asm-173-3"), "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["app"] == "istiod"
    assert labels["istio.io/rev"] == "asm-173-3"
    assert labels["istio"] == "istiod"
    # the control plane must never be sent to its own webhook
    assert labels[names.LABEL_INJECT] == "false"
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_control_plane_pods_are_not_matched_by_any_webhook_entry() -> None:
    objects = _render("asm-173-3")
    (deployment,) = _by_kind(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for entry in revision_webhooks("asm-173-3") + revision_webhooks("default", default=True):
        assert not entry.matches({}, pod_labels)


def test_deployment_runs_discovery_least_privileged() -> None:
    (deployment,) = _by_kind(_render("blue"), "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][:2] == ["discovery", "--kube"]
    assert "command" not in container  # the image's ENTRYPOINT is `sidemesh`
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["allowPrivilegeEscalation"] is False
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["labelSelector"]["matchLabels"]["istio.io/rev"] == "blue"
    assert pod["serviceAccountName"] == "istiod-blue"


def test_image_comes_from_values() -> None:
    (deployment,) = _by_kind(_render("blue", "global.hub=reg.example", "global.tag=9.9"),
                             "Deployment")  # fmt: skip
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "reg.example/sidemesh:9.9"
    )
    (deployment,) = _by_kind(_render("blue", "pilot.image=other/img@sha256:abc"), "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "other/img@sha256:abc"
    )


def test_service_ports() -> None:
    (service,) = _by_kind(_render("blue"), "Service")
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
    # Istio's names; plaintext xDS (grpc-xds, 15010) only when asked for (test_plaintext_xds)
    assert ports == {"https-webhook": (443, 15017), "https-dns": (15012, 15012),
                     "http-monitoring": (15014, 15014)}  # fmt: skip
    assert service["spec"]["selector"] == {"app": "istiod", "istio.io/rev": "blue"}


def test_disruption_budget_can_be_turned_off() -> None:
    assert _by_kind(_render("blue"), "PodDisruptionBudget")
    off = _render("blue", "global.defaultPodDisruptionBudget.enabled=false")
    assert not _by_kind(off, "PodDisruptionBudget")


@pytest.mark.parametrize("revision", ["blue", "default"])
def test_webhook_is_built_from_revision_webhooks(revision: str) -> None:
    (webhook,) = _by_kind(
        _render(revision, "sidecarInjectorWebhook.timeoutSeconds=7",
                "sidecarInjectorWebhook.reinvocationPolicy=IfNeeded"),
        "MutatingWebhookConfiguration",
    )  # fmt: skip
    entries = revision_webhooks(revision, default=revision == "default")
    assert webhook["metadata"]["name"] == names.webhook_configuration_name(revision)
    assert webhook["metadata"]["labels"]["istio.io/rev"] == revision
    assert [w["name"] for w in webhook["webhooks"]] == [e.name for e in entries]
    for item, entry in zip(webhook["webhooks"], entries, strict=True):
        assert item["namespaceSelector"] == entry.namespace_selector.to_kubernetes()
        assert item["objectSelector"] == entry.object_selector.to_kubernetes()
        assert item["failurePolicy"] == "Fail"
        assert item["sideEffects"] == "None"
        assert item["admissionReviewVersions"] == ["v1"]
        assert item["timeoutSeconds"] == 7
        assert item["reinvocationPolicy"] == "IfNeeded"
        assert item["clientConfig"]["service"] == {
            "name": names.service_name(revision), "namespace": "istio-system",
            "path": "/inject", "port": 443,
        }  # fmt: skip
        assert "caBundle" not in item["clientConfig"]  # the control plane owns it
        assert item["rules"] == [
            {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
             "resources": ["pods"]}
        ]  # fmt: skip


def test_default_revision_is_deactivated_under_a_default_tag() -> None:
    values = InstallValues()
    webhook = manifests.injector_webhook(values, "default", default_tag_exists=True)
    for item in webhook["webhooks"]:
        assert item["namespaceSelector"] == {"matchLabels": {"istio.io/deactivated": "never-match"}}


def _rules(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list(obj["rules"])


def test_rbac_is_least_privilege() -> None:
    objects = _render("blue")
    (cluster_role,) = _by_kind(objects, "ClusterRole")
    (role,) = [r for r in _by_kind(objects, "Role") if r["metadata"]["name"] == "istiod-blue"]
    for rule in _rules(cluster_role) + _rules(role):
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert "*" not in rule["apiGroups"]
        assert "delete" not in rule["verbs"] and "deletecollection" not in rule["verbs"]
    cluster_resources = {r for rule in _rules(cluster_role) for r in rule["resources"]}
    assert "secrets" not in cluster_resources and "leases" not in cluster_resources
    assert role["metadata"]["namespace"] == "istio-system"
    granted = {(r, v) for rule in _rules(cluster_role) for r in rule["resources"]
               for v in rule["verbs"]}  # fmt: skip
    assert ("tokenreviews", "create") in granted
    assert ("mutatingwebhookconfigurations", "patch") in granted
    assert ("mutatingwebhookconfigurations", "create") not in granted
    assert ("pods", "watch") in granted and ("pods", "patch") not in granted
    for traffic in ("virtualservices", "destinationrules"):  # read, never written
        assert {v for r, v in granted if r == traffic} == {"get", "list", "watch"}
    for binding in _by_kind(objects, "ClusterRoleBinding") + _by_kind(objects, "RoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "istiod-blue", "namespace": "istio-system"}
        ]


def test_configmaps_hold_what_discovery_reads() -> None:
    import orjson
    import yaml

    from sidemesh.api.config import InjectorConfig, InjectorValues, MeshConfig

    objects = _render("blue", "meshConfig.trustDomain=example.org")
    injector, mesh = _by_kind(objects, "ConfigMap")
    config = InjectorConfig.model_validate(yaml.safe_load(injector["data"]["config"]))
    values = InjectorValues.model_validate(orjson.loads(injector["data"]["values"]))
    assert config == InjectorConfig()
    assert values.revision == "blue"
    assert MeshConfig.model_validate(yaml.safe_load(mesh["data"]["mesh"])).trust_domain == (
        "example.org"
    )
    (deployment,) = _by_kind(objects, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--injector-config") + 1] == "/etc/istio/inject/config"
    assert args[args.index("--mesh-config") + 1] == "/etc/istio/config/mesh"
