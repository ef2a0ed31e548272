"""AuthorizationPolicy and RequestAuthentication in the local runtime: kubectl's words,
applied like any object, refused at apply by the one validation path (field named), listed,
and handed to the control plane's file registry."""

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


def policy(rules: list[Any]) -> dict[str, Any]:
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "web", "namespace": "demo"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "rules": rules}}  # fmt: skip


def request_authentication() -> dict[str, Any]:
    return {"apiVersion": "security.istio.io/v1beta1", "kind": "RequestAuthentication",
            "metadata": {"name": "jwt", "namespace": "demo"},
            "spec": {"jwtRules": [{"issuer": "https://issuer.example"}]}}  # fmt: skip


def test_kubectls_words_name_the_kinds() -> None:
    assert RESOURCE_WORDS["ap"] == RESOURCE_WORDS["authorizationpolicies"] == "AuthorizationPolicy"
    assert RESOURCE_WORDS["requestauthentication.security.istio.io"] == "RequestAuthentication"


def test_apply_get_registry_delete(tmp_path: Path) -> None:
    state = empty_state()
    ensure_namespace(state, "demo", 1.0)
    result = apply_objects(state, [policy([{}]), request_authentication()], now=1.0,
                           default_namespace="default")  # fmt: skip
    assert result.errors == []
    assert result.lines == [
        "authorizationpolicy.security.istio.io/web created",
        "requestauthentication.security.istio.io/jwt created",
    ]
    listed = get(state, GetRequest(kind="AuthorizationPolicy", namespace="demo"), now=2.0)
    assert listed.out == "authorizationpolicy/web\n"
    objects = registry_objects(
        state.namespaces.values(), state.services.values(), state.pods.values(), state.network,
        policies=[*state.authorizationpolicies.values(), *state.requestauthentications.values()],
    )  # fmt: skip
    (tmp_path / "local.yaml").write_text(yaml.safe_dump_all(objects))
    snapshot = load_snapshot([tmp_path])
    assert [r.name for r in snapshot.authorization_policies] == ["web"]
    assert [r.name for r in snapshot.request_authentications] == ["jwt"]
    delete_object(state, "AuthorizationPolicy", "demo", "web", 3.0)
    assert not state.authorizationpolicies


def test_an_invalid_one_is_refused_at_apply_naming_the_field() -> None:
    state = empty_state()
    ensure_namespace(state, "demo", 1.0)
    result = apply_objects(state, [policy([{"to": [{"operation": {"ports": ["0"]}}]}])],
                           now=1.0, default_namespace="default")  # fmt: skip
    assert result.errors == [
        'The AuthorizationPolicy "web" is invalid: spec.rules[0].to[0].operation.ports: '
        "'0' is not a port number 1-65535"
    ]
    assert not state.authorizationpolicies
