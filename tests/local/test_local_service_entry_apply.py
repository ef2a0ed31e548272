"""ServiceEntry, Sidecar and Telemetry in the local runtime: applied, listed and deleted like
any object, refused at apply by their group's one validation path (the words `sidemesh
validate` and the validating webhook print), and handed to the control plane's file registry,
which reads them into its snapshot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from local_testkit import empty_state

from sidemesh.local.apiserver import apply_objects, delete_object, ensure_namespace, refused_objects
from sidemesh.local.listing import GetRequest, get
from sidemesh.local.manifests import RESOURCE_WORDS
from sidemesh.local.services import registry_objects
from sidemesh.xds.registry_files import load_snapshot


def service_entry(location: str = "MESH_EXTERNAL") -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
        "metadata": {"name": "api", "namespace": "shop"},
        "spec": {"hosts": ["api.external.example"], "location": location, "resolution": "STATIC",
                 "ports": [{"number": 9080, "name": "http", "protocol": "HTTP"}],
                 "endpoints": [{"address": "10.244.0.1"}]},
    }  # fmt: skip


def sidecar(host: str = "./*") -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
        "metadata": {"name": "default", "namespace": "shop"},
        "spec": {"egress": [{"hosts": [host, "istio-system/*"]}],
                 "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}},
    }  # fmt: skip


def telemetry(percentage: float = 10.0) -> dict[str, Any]:
    return {
        "apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
        "metadata": {"name": "mesh-default", "namespace": "shop"},
        "spec": {"tracing": [{"randomSamplingPercentage": percentage}]},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("word", "kind"),
    [("se", "ServiceEntry"), ("serviceentries", "ServiceEntry"),
     ("serviceentry.networking.istio.io", "ServiceEntry"), ("sidecar", "Sidecar"),
     ("sidecars", "Sidecar"), ("telemetry", "Telemetry"), ("telemetries", "Telemetry")],
)  # fmt: skip
def test_kubectls_words_name_the_kinds(word: str, kind: str) -> None:
    assert RESOURCE_WORDS[word] == kind


def test_apply_get_and_delete_like_kubectl() -> None:
    state = empty_state()
    ensure_namespace(state, "shop", 1.0)
    result = apply_objects(state, [service_entry(), sidecar(), telemetry()], now=1.0,
                           default_namespace="default")  # fmt: skip
    assert result.errors == []
    assert result.lines == [
        "serviceentry.networking.istio.io/api created",
        "sidecar.networking.istio.io/default created",
        "telemetry.telemetry.istio.io/mesh-default created",
    ]
    again = apply_objects(state, [telemetry(25.0), sidecar()], now=2.0, default_namespace="x")
    assert again.lines == [
        "telemetry.telemetry.istio.io/mesh-default configured",
        "sidecar.networking.istio.io/default unchanged",
    ]
    listed = get(state, GetRequest(kind="ServiceEntry", namespace="shop", output="yaml"), now=3.0)
    assert yaml.safe_load(listed.out)["items"][0]["spec"]["hosts"] == ["api.external.example"]
    assert delete_object(state, "Sidecar", "shop", "default", 3.0) == 'sidecar "default" deleted'
    assert state.sidecars == {}
    assert delete_object(state, "Namespace", "", "shop", 4.0) == 'namespace "shop" deleted'
    assert state.serviceentries == {} and state.telemetries == {}


@pytest.mark.parametrize(
    ("obj", "words"),
    [
        (service_entry("SOMEWHERE"),
         "The ServiceEntry \"api\" is invalid: spec.location: Input should be 'MESH_EXTERNAL' "
         "or 'MESH_INTERNAL'"),
        (sidecar("nodots"),
         "The Sidecar \"default\" is invalid: spec.egress[0].hosts[0]: 'nodots' must be of the "
         "form namespace/dnsName"),
        (telemetry(150.0),
         "The Telemetry \"mesh-default\" is invalid: spec.tracing[0].randomSamplingPercentage: "
         "Input should be less than or equal to 100"),
    ],
)  # fmt: skip
def test_an_invalid_one_is_refused_naming_the_field_and_nothing_is_stored(
    obj: dict[str, Any], words: str
) -> None:
    state = empty_state()
    ensure_namespace(state, "shop", 1.0)
    refused = refused_objects(state, [("bad.yaml", [service_entry(), obj])], now=1.0,
                              default_namespace="default")  # fmt: skip
    assert refused == [words]
    assert state.serviceentries == {}  # the trial ran on a copy: the valid one is not stored


def test_the_registry_file_carries_them_to_the_control_plane(tmp_path: Path) -> None:
    state = empty_state()
    ensure_namespace(state, "shop", 1.0)
    apply_objects(state, [service_entry(), sidecar(), telemetry()], now=1.0,
                  default_namespace="default")  # fmt: skip
    objects = registry_objects(
        state.namespaces.values(), state.services.values(), state.pods.values(), state.network,
        policies=[*state.serviceentries.values(), *state.sidecars.values(),
                  *state.telemetries.values()],
    )  # fmt: skip
    (tmp_path / "registry.yaml").write_text(yaml.safe_dump_all(objects))
    snapshot = load_snapshot([tmp_path])
    [entry] = snapshot.service_entries
    assert (entry.namespace, entry.name) == ("shop", "api")
    assert entry.spec.hosts == ("api.external.example",)
    [scope] = snapshot.sidecars
    assert scope.spec.outbound_traffic_policy is not None
    assert scope.spec.outbound_traffic_policy.mode == "REGISTRY_ONLY"
    [telemetry_] = snapshot.telemetries
    assert telemetry_.name == "mesh-default"
