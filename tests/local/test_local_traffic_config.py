"""VirtualService and DestinationRule in the local runtime: applied like any object, refused
at apply by the one validation path, and handed to the control plane's file registry, which
turns them into routes and subset clusters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from local_testkit import empty_state

from sidemesh.local.apiserver import apply_objects, delete_object, ensure_namespace
from sidemesh.local.listing import GetRequest, get
from sidemesh.local.manifests import RESOURCE_WORDS
from sidemesh.local.services import registry_objects
from sidemesh.xds.registry_files import load_snapshot


def virtual_service(timeout: str = "2s") -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "demo"},
        "spec": {
            "hosts": ["reviews"],
            "http": [{"route": [{"destination": {"host": "reviews", "subset": "v2"}}],
                      "timeout": timeout}],
        },
    }  # fmt: skip


def destination_rule() -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "DestinationRule",
        "metadata": {"name": "reviews", "namespace": "demo"},
        "spec": {"host": "reviews", "subsets": [{"name": "v2", "labels": {"version": "v2"}}]},
    }


def test_kubectls_words_name_the_kinds() -> None:
    assert RESOURCE_WORDS["vs"] == RESOURCE_WORDS["virtualservices"] == "VirtualService"
    assert RESOURCE_WORDS["dr"] == "DestinationRule"
    assert RESOURCE_WORDS["destinationrule.networking.istio.io"] == "DestinationRule"


def test_apply_stores_and_reports_them_like_kubectl() -> None:
    state = empty_state()
    ensure_namespace(state, "demo", 1.0)
    result = apply_objects(state, [virtual_service(), destination_rule()], now=1.0,
                           default_namespace="default")  # fmt: skip
    assert result.errors == []
    assert result.lines == [
        "virtualservice.networking.istio.io/reviews created",
        "destinationrule.networking.istio.io/reviews created",
    ]
    again = apply_objects(state, [virtual_service("3s")], now=2.0, default_namespace="default")
    assert again.lines == ["virtualservice.networking.istio.io/reviews configured"]
    delete_object(state, "VirtualService", "demo", "reviews", 3.0)
    delete_object(state, "DestinationRule", "demo", "reviews", 3.0)
    assert not state.virtualservices and not state.destinationrules


def test_an_invalid_one_is_refused_at_apply_naming_the_field() -> None:
    state = empty_state()
    ensure_namespace(state, "demo", 1.0)
    result = apply_objects(state, [virtual_service("soon")], now=1.0, default_namespace="d")
    assert len(result.errors) == 1
    assert result.errors[0].startswith('The VirtualService "reviews" is invalid: ')
    assert "spec.http[0].timeout" in result.errors[0]
    assert not state.virtualservices


def test_the_registry_carries_them_to_the_generator(tmp_path: Path) -> None:
    state = empty_state()
    ensure_namespace(state, "demo", 1.0)
    apply_objects(state, [virtual_service(), destination_rule()], now=1.0,
                  default_namespace="default")  # fmt: skip
    objects = registry_objects(
        state.namespaces.values(),
        state.services.values(),
        state.pods.values(),
        state.network,
        policies=[*state.virtualservices.values(), *state.destinationrules.values()],
    )
    (tmp_path / "local.yaml").write_text(yaml.safe_dump_all(objects))
    snapshot = load_snapshot([tmp_path])
    assert [(r.kind, r.namespace, r.name) for r in snapshot.virtual_services] == [
        ("VirtualService", "demo", "reviews")
    ]
    [rule] = snapshot.destination_rules
    assert [s.name for s in rule.spec.subsets] == ["v2"]


def test_get_lists_them() -> None:
    state = empty_state()
    ensure_namespace(state, "demo", 1.0)
    apply_objects(state, [virtual_service(), destination_rule()], now=1.0,
                  default_namespace="default")  # fmt: skip
    for kind in ("VirtualService", "DestinationRule"):
        result = get(state, GetRequest(kind=kind, namespace="demo"), now=2.0)
        assert result.out == f"{kind.lower()}/reviews\n"
