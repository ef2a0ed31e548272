"""The CRDs: `sidemesh install` applies them (and the chart ships them, see test_helm_chart and
the file comparison below), they are valid and strictly checked objects, the PeerAuthentication
schema accepts what discovery reads and refuses what it would reject, the `networking.istio.io`
schemas (generated from the models `sidemesh validate` uses) are structural and agree with the
validators, and uninstall never deletes any of them."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any, get_args

import kmock
import kubernetes_validate
import pytest
import yaml
from lightkube import AsyncClient, KubeConfig
from lightkube.config.models import Cluster, User

from sidemesh.api import networking
from sidemesh.api.networking.common import TLSMode
from sidemesh.install import crds, manifests, naming
from sidemesh.install.overrides import load_install_values
from sidemesh.kube import installer
from sidemesh.xds.convert import MODES, peer_authentication

CRD_NAME = "peerauthentications.security.istio.io"
NETWORKING_CRDS = tuple(f"{k.plural}.networking.istio.io" for k in networking.KINDS.values())
SECURITY_CRDS = ("authorizationpolicies.security.istio.io",
                 "requestauthentications.security.istio.io",
                 "telemetries.telemetry.istio.io")  # fmt: skip
KUBE_VERSIONS = ("1.25", "1.28", kubernetes_validate.utils.latest_version())
CHART_CRDS = Path(__file__).resolve().parents[2] / "charts" / "sidemesh" / "crds"


def _render(revision: str = "blue") -> list[dict[str, Any]]:
    values, chosen = load_install_values([], [], revision=revision)
    return manifests.render(values, chosen)


def _crds() -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in _render() if o["kind"] == "CustomResourceDefinition"}


def _crd(name: str = CRD_NAME) -> dict[str, Any]:
    return _crds()[name]


def _version(name: str) -> dict[str, Any]:
    (version,) = [v for v in _crd()["spec"]["versions"] if v["name"] == name]
    return dict(version)


@pytest.mark.parametrize("revision", ["default", "blue"])
def test_install_applies_the_crd_before_any_revision_object(revision: str) -> None:
    kinds = [o["kind"] for o in _render(revision)]
    count = 1 + len(NETWORKING_CRDS) + len(SECURITY_CRDS)
    assert kinds[: 1 + count] == ["Namespace", *["CustomResourceDefinition"] * count]
    assert kinds.count("CustomResourceDefinition") == count
    assert sorted(_crds()) == sorted([CRD_NAME, *NETWORKING_CRDS, *SECURITY_CRDS])


@pytest.mark.parametrize("name", [CRD_NAME, *NETWORKING_CRDS])
@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_crd_validates_strictly(version: str, name: str) -> None:
    kubernetes_validate.validate(_crd(name), version, strict=True)


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


_SCALARS: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
}  # fmt: skip


def _structural_errors(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    """What the API server's structural validation (with kubectl's strict field validation)
    says about `value`: types, enums, ranges, unknown fields. CEL rules are not evaluated."""
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r} is not one of {schema['enum']}"]
    if schema["type"] in _SCALARS:
        if not isinstance(value, _SCALARS[schema["type"]]) or (
            isinstance(value, bool) and schema["type"] != "boolean"
        ):
            return [f"{path}: not a {schema['type']}"]
        if "minimum" in schema and value < schema["minimum"]:
            return [f"{path}: below {schema['minimum']}"]
        if "maximum" in schema and value > schema["maximum"]:
            return [f"{path}: above {schema['maximum']}"]
        return []
    if schema["type"] == "array":
        if not isinstance(value, list):
            return [f"{path}: not an array"]
        return [e for i, item in enumerate(value)
                for e in _structural_errors(item, schema["items"], f"{path}[{i}]")]  # fmt: skip
    assert schema["type"] == "object", schema
    if not isinstance(value, dict):
        return [f"{path}: not an object"]
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    errors = [f"{path}.{key}: required" for key in schema.get("required", []) if key not in value]
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
    for crd in _crds().values():
        assert crd["metadata"]["labels"] == {naming.LABEL_PART_OF: naming.PART_OF}
    blue = [o for o in _render("blue") if o["kind"] == "CustomResourceDefinition"]
    green = [o for o in _render("green") if o["kind"] == "CustomResourceDefinition"]
    assert blue == green == crds.custom_resource_definitions()
    assert crds.peer_authentication() in blue


def test_uninstall_does_not_list_crds() -> None:
    kinds = {kind for _, kind, *_ in installer.UNINSTALL_KINDS}
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
            for crd in crds.custom_resource_definitions():
                name = crd["metadata"]["name"]
                stored = api.stored(resource, None, name)
                assert stored == {**crd, "metadata": stored["metadata"]}, name
            deleted = await installer.uninstall(client, "blue", report=_quiet)
            deleted += await installer.uninstall(client, "green", report=_quiet)
    assert "Namespace/istio-system" in deleted
    assert not [d for d in deleted if d.startswith("CustomResourceDefinition/")]
    for name in (CRD_NAME, *NETWORKING_CRDS):
        assert api.stored(resource, None, name) is not None, name


# --- networking.istio.io -----------------------------------------------------------------


def test_chart_crd_files_are_what_install_renders() -> None:
    """One file per CRD in charts/sidemesh/crds/, named after it, equal to what `sidemesh
    install` applies (regenerate: `python -m sidemesh.install.crds charts/sidemesh/crds`)."""
    shipped = {p.name: yaml.safe_load(p.read_text()) for p in sorted(CHART_CRDS.glob("*.yaml"))}
    assert shipped == {f"{name}.yaml": crd for name, crd in _crds().items()}


@pytest.mark.parametrize("kind", list(networking.KINDS.values()), ids=list(networking.KINDS))
def test_networking_crd_serves_istios_versions(kind: networking.Kind[Any]) -> None:
    crd = _crd(f"{kind.plural}.networking.istio.io")
    spec = crd["spec"]
    assert spec["group"] == "networking.istio.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == kind.name
    assert spec["names"]["plural"] == kind.plural
    assert spec["names"]["singular"] == kind.name.lower()
    assert spec["names"].get("shortNames", []) == list(kind.short_names)
    served = {v["name"]: (v["served"], v["storage"]) for v in spec["versions"]}
    assert served == {"v1": (True, True), "v1beta1": (True, False), "v1alpha3": (True, False)}
    schemas = [v["schema"] for v in spec["versions"]]
    assert all(schema == schemas[0] for schema in schemas)  # no conversion needed


def _structural_violations(node: Any, path: str) -> list[str]:
    """Kubernetes' structural-schema rules that the generator must keep: every node has a
    type (or preserves unknown fields), no references or unions, no defaults, and
    properties and additionalProperties never together."""
    found = []
    if not isinstance(node, dict):
        return [f"{path}: not a schema"]
    for forbidden in ("$ref", "anyOf", "oneOf", "allOf", "default", "title", "$defs"):
        if forbidden in node:
            found.append(f"{path}: has {forbidden}")
    if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        found.append(f"{path}: no type")
    if "properties" in node and "additionalProperties" in node:
        found.append(f"{path}: properties and additionalProperties")
    for name, sub in (node.get("properties") or {}).items():
        found += _structural_violations(sub, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        found += _structural_violations(node["additionalProperties"], f"{path}.*")
    if "items" in node:
        found += _structural_violations(node["items"], f"{path}[]")
    return found


def _networking_schema(kind: str) -> dict[str, Any]:
    plural = networking.KINDS[kind].plural
    (version,) = [v for v in _crd(f"{plural}.networking.istio.io")["spec"]["versions"]
                  if v["name"] == "v1"]  # fmt: skip
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


@pytest.mark.parametrize("kind", list(networking.KINDS))
def test_networking_schemas_are_structural(kind: str) -> None:
    assert _structural_violations(_networking_schema(kind), "") == []


def test_tls_mode_enum_is_what_validation_reads() -> None:
    spec = _networking_schema("DestinationRule")["properties"]["spec"]
    tls = spec["properties"]["trafficPolicy"]["properties"]["tls"]["properties"]["mode"]
    assert tls == {"type": "string", "enum": list(get_args(TLSMode))}


NETWORKING_ACCEPTED = [
    ("VirtualService", {"hosts": ["reviews"], "http": [{
        "match": [{"uri": {"prefix": "/"}, "headers": {"end-user": {"exact": "jason"}}}],
        "route": [{"destination": {"host": "reviews", "subset": "v1", "port": {"number": 9080}},
                   "weight": 90},
                  {"destination": {"host": "reviews", "subset": "v2"}, "weight": 10}],
        "timeout": "1s", "retries": {"attempts": 2, "perTryTimeout": "500ms"},
        "fault": {"delay": {"fixedDelay": "1s", "percentage": {"value": 0.5}}},
        "corsPolicy": {"allowOrigins": [{"exact": "https://example.com"}]}}]}),
    ("DestinationRule", {"host": "reviews", "trafficPolicy": {
        "connectionPool": {"tcp": {"maxConnections": 1}, "http": {"http2MaxRequests": 10}},
        "outlierDetection": {"consecutive5xxErrors": 1, "interval": "1s"},
        "loadBalancer": {"simple": "RANDOM", "localityLbSetting": {"enabled": True}}},
        "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}),
    ("ServiceEntry", {"hosts": ["api.example.com"], "ports": [
        {"number": 443, "name": "https", "protocol": "TLS"}], "resolution": "DNS"}),
    ("Sidecar", {"egress": [{"hosts": ["./*"]}]}),
    ("Gateway", {"selector": {"istio": "ingressgateway"}, "servers": [
        {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}),
]  # fmt: skip
NETWORKING_REFUSED = [
    ("VirtualService", {"hosts": ["a"], "http": [{"route": [{"destination": {"host": "a"},
                                                             "weight": -1}]}]},
     ".spec.http[0].route[0].weight:"),
    ("VirtualService", {"hosts": ["a"], "htttp": []}, ".spec.htttp:"),
    ("DestinationRule", {"host": "a", "trafficPolicy": {"tls": {"mode": "STRICT"}}},
     ".spec.trafficPolicy.tls.mode:"),
    ("DestinationRule", {"host": "a", "trafficPolicy": {"loadBalancer": {"warmup": {
        "duration": "1s", "minimumPercent": 101}}}},
     ".spec.trafficPolicy.loadBalancer.warmup.minimumPercent:"),
    ("DestinationRule", {"subsets": []}, ".spec.host:"),
    ("ServiceEntry", {"hosts": ["a"], "resolution": "LOOKUP"}, ".spec.resolution:"),
    ("Sidecar", {"egress": [{"hosts": "./*"}]}, ".spec.egress[0].hosts:"),
    ("Gateway", {"servers": [{"port": {"number": 70000, "name": "x", "protocol": "HTTP"},
                              "hosts": ["*"]}]}, ".spec.servers[0].port.number:"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "spec"), NETWORKING_ACCEPTED)
def test_networking_schemas_accept_what_validation_accepts(kind: str, spec: dict[str, Any]) -> None:
    assert _structural_errors({"spec": spec}, _networking_schema(kind), "") == []
    networking.validate({"apiVersion": "networking.istio.io/v1", "kind": kind,
                         "metadata": {"name": "x"}, "spec": spec})  # fmt: skip


@pytest.mark.parametrize(("kind", "spec", "field"), NETWORKING_REFUSED)
def test_networking_schemas_refuse_what_validation_refuses(
    kind: str, spec: dict[str, Any], field: str
) -> None:
    errors = _structural_errors({"spec": spec}, _networking_schema(kind), "")
    assert len(errors) == 1 and errors[0].startswith(field), errors
    with pytest.raises(networking.ValidationError):
        networking.validate({"apiVersion": "networking.istio.io/v1", "kind": kind,
                             "metadata": {"name": "x"}, "spec": spec})  # fmt: skip
