"""The PeerAuthentication CRD: `sidemesh install` applies it (and the chart ships it, see
test_helm_chart), it is a valid and strictly checked object, its schema accepts what discovery
reads and refuses what it would reject, and uninstall never deletes it."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import kmock
import kubernetes_validate
import pytest
from lightkube import AsyncClient, KubeConfig
from lightkube.config.models import Cluster, User

from sidemesh.install import crds, manifests, naming
from sidemesh.install.overrides import load_install_values
from sidemesh.kube import installer
from sidemesh.xds.convert import MODES, peer_authentication

CRD_NAME = "peerauthentications.security.istio.io"
KUBE_VERSIONS = ("1.25", "1.28", kubernetes_validate.utils.latest_version())


def _render(revision: str = "blue") -> list[dict[str, Any]]:
    values, chosen = load_install_values([], [], revision=revision)
    return manifests.render(values, chosen)


def _crd() -> dict[str, Any]:
    (crd,) = [o for o in _render() if o["kind"] == "CustomResourceDefinition"]
    return crd


def _version(name: str) -> dict[str, Any]:
    (version,) = [v for v in _crd()["spec"]["versions"] if v["name"] == name]
    return dict(version)


@pytest.mark.parametrize("revision", ["default", "blue"])
def test_install_applies_the_crd_before_any_revision_object(revision: str) -> None:
    kinds = [o["kind"] for o in _render(revision)]
    assert kinds[:2] == ["Namespace", "CustomResourceDefinition"]
    assert kinds.count("CustomResourceDefinition") == 1


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_crd_validates_strictly(version: str) -> None:
    kubernetes_validate.validate(_crd(), version, strict=True)


def test_crd_serves_istios_api() -> None:
    crd = _crd()
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == CRD_NAME
    spec = crd["spec"]
    assert spec["group"] == "security.istio.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "PeerAuthentication"
    assert spec["names"]["plural"] == "peerauthentications"
    assert spec["names"]["singular"] == "peerauthentication"
    assert spec["names"]["shortNames"] == ["pa"]
    served = {v["name"]: (v["served"], v["storage"]) for v in spec["versions"]}
    assert served == {"v1": (True, True), "v1beta1": (True, False)}
    # one schema for both versions: no conversion needed
    assert _version("v1")["schema"] == _version("v1beta1")["schema"]


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_kubectl_get_shows_mode_and_age(version: str) -> None:
    columns = {c["name"]: (c["type"], c["jsonPath"])
               for c in _version(version)["additionalPrinterColumns"]}  # fmt: skip
    assert columns == {
        "Mode": ("string", ".spec.mtls.mode"),
        "Age": ("date", ".metadata.creationTimestamp"),
    }


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = _version("v1")["schema"]["openAPIV3Schema"]
    return schema


def test_mode_enum_is_what_discovery_reads() -> None:
    spec = _schema()["properties"]["spec"]["properties"]
    mode = spec["mtls"]["properties"]["mode"]
    port_mode = spec["portLevelMtls"]["additionalProperties"]["properties"]["mode"]
    assert mode["type"] == port_mode["type"] == "string"
    assert mode["enum"] == port_mode["enum"] == ["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]
    assert set(mode["enum"]) == set(MODES)


def _structural_errors(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    """What the API server's structural validation (with kubectl's strict field validation)
    says about `value`: types, enums, unknown fields. CEL rules are not evaluated here."""
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r} is not one of {schema['enum']}"]
    if schema["type"] == "string":
        return [] if isinstance(value, str) else [f"{path}: not a string"]
    assert schema["type"] == "object", schema
    if not isinstance(value, dict):
        return [f"{path}: not an object"]
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    errors = []
    for key, item in value.items():
        properties = schema.get("properties", {})
        sub = properties[key] if key in properties else schema.get("additionalProperties")
        if sub is None:
            errors.append(f"{path}.{key}: unknown field")
        else:
            errors += _structural_errors(item, sub, f"{path}.{key}")
    return errors


def _policy(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "p", "namespace": "shop"},
        "spec": spec,
    }


ACCEPTED = [
    {"mtls": {"mode": "STRICT"}},
    {"mtls": {"mode": "UNSET"}},
    {},
    {"selector": {"matchLabels": {"app": "db"}}, "mtls": {"mode": "STRICT"},
     "portLevelMtls": {"8080": {"mode": "PERMISSIVE"}, "9000": {"mode": "DISABLE"}}},
]  # fmt: skip
REFUSED = [
    ({"mtls": {"mode": "strict"}}, ".spec.mtls.mode"),
    ({"mtls": {"mode": "MUTUAL"}}, ".spec.mtls.mode"),
    ({"selector": {"matchLabels": {"app": "db"}}, "portLevelMtls": {"80": {"mode": "ON"}}},
     ".spec.portLevelMtls.80.mode"),
    ({"mtls": {"mode": "STRICT", "extra": 1}}, ".spec.mtls.extra"),
    ({"selector": {"matchLabels": {"app": 3}}}, ".spec.selector.matchLabels.app"),
    ({"mtls": "STRICT"}, ".spec.mtls"),
]  # fmt: skip


@pytest.mark.parametrize("spec", ACCEPTED)
def test_schema_accepts_what_discovery_reads(spec: dict[str, Any]) -> None:
    policy = _policy(spec)
    assert _structural_errors({"spec": policy["spec"]}, _schema(), "") == []
    peer_authentication(policy)  # and discovery reads it without error


@pytest.mark.parametrize(("spec", "field"), REFUSED)
def test_schema_refuses_bad_policies(spec: dict[str, Any], field: str) -> None:
    errors = _structural_errors({"spec": spec}, _schema(), "")
    assert len(errors) == 1 and errors[0].startswith(f"{field}:"), errors


def test_istiod_may_list_and_watch_what_the_crd_serves() -> None:
    (cluster_role,) = [o for o in _render() if o["kind"] == "ClusterRole"]
    spec = _crd()["spec"]
    granted = {(group, resource, verb) for rule in cluster_role["rules"]
               for group in rule["apiGroups"] for resource in rule["resources"]
               for verb in rule["verbs"]}  # fmt: skip
    for verb in ("get", "list", "watch"):
        assert (spec["group"], spec["names"]["plural"], verb) in granted
    assert not {v for g, r, v in granted if r == spec["names"]["plural"]} - {"get", "list", "watch"}


def test_crd_is_shared_not_owned_by_a_revision() -> None:
    labels = _crd()["metadata"]["labels"]
    assert labels == {naming.LABEL_PART_OF: naming.PART_OF}
    blue = [o for o in _render("blue") if o["kind"] == "CustomResourceDefinition"]
    green = [o for o in _render("green") if o["kind"] == "CustomResourceDefinition"]
    assert blue == green == [crds.peer_authentication()]


def test_uninstall_does_not_list_crds() -> None:
    kinds = {kind for _, kind, _ in installer.UNINSTALL_KINDS}
    assert "CustomResourceDefinition" not in kinds


def _cluster_emulator() -> Any:
    """tests/kube's in-memory API server (kmock, taught server-side apply and selectors)."""
    kube_tests = str(Path(__file__).resolve().parents[1] / "kube")
    if kube_tests not in sys.path:
        sys.path.append(kube_tests)
    return importlib.import_module("cluster_emulator")


def _quiet(_: str) -> None:
    pass


async def test_uninstall_of_the_last_revision_keeps_the_crd() -> None:
    """Deleting a CRD deletes every PeerAuthentication, so uninstall never does, not even when
    it removes the last revision and istio-system with it."""
    resource = "apiextensions.k8s.io/v1/customresourcedefinitions"
    async with _cluster_emulator().ApiServer() as api, kmock.Server(api):
        config = KubeConfig.from_one(cluster=Cluster(server=str(api.url)), user=User())
        async with AsyncClient(config=config, field_manager="sidemesh-test") as client:
            for revision in ("blue", "green"):
                values, chosen = load_install_values([], [], revision=revision)
                await installer.install(client, values, chosen, report=_quiet)
            assert api.stored(resource, None, CRD_NAME) == {
                **crds.peer_authentication(),
                "metadata": api.stored(resource, None, CRD_NAME)["metadata"],
            }
            deleted = await installer.uninstall(client, "blue", report=_quiet)
            deleted += await installer.uninstall(client, "green", report=_quiet)
    assert "Namespace/istio-system" in deleted
    assert not [d for d in deleted if d.startswith("CustomResourceDefinition/")]
    assert api.stored(resource, None, CRD_NAME) is not None
