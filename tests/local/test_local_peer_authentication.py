"""PeerAuthentication: applied like any object, validated as its CRD would be, and handed to
the control plane through the file registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from local_testkit import empty_state

from sidemesh.local.apiserver import apply_objects, delete_object, ensure_namespace
from sidemesh.local.controlplane import ControlPlaneOptions, discovery_args
from sidemesh.local.services import registry_objects
from sidemesh.xds.registry_files import load_objects


def policy(mode: str = "STRICT", api_version: str = "security.istio.io/v1") -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": "demo"},
        "spec": {"mtls": {"mode": mode}},
    }


def test_apply_stores_and_reports_it_like_kubectl() -> None:
    state = empty_state()
    ensure_namespace(state, "demo", 1.0)
    result = apply_objects(state, [policy()], now=1.0, default_namespace="default")
    assert result.lines == ["peerauthentication.security.istio.io/default created"]
    assert list(state.peerauthentications) == ["demo/default"]
    again = apply_objects(state, [policy()], now=2.0, default_namespace="default")
    assert again.lines == ["peerauthentication.security.istio.io/default unchanged"]
    delete_object(state, "PeerAuthentication", "demo", "default", 3.0)
    assert not state.peerauthentications


def test_a_bad_mode_or_group_is_refused_at_apply() -> None:
    state = empty_state()
    ensure_namespace(state, "demo", 1.0)
    bad_mode = apply_objects(state, [policy("STRICTEST")], now=1.0, default_namespace="default")
    assert bad_mode.errors and "STRICTEST" in bad_mode.errors[0]
    bad_group = apply_objects(state, [policy(api_version="v1")], now=1.0, default_namespace="d")
    assert bad_group.errors and "security.istio.io" in bad_group.errors[0]
    assert not state.peerauthentications


def test_the_registry_carries_it_to_the_control_planes_reader(tmp_path: Path) -> None:
    state = empty_state()
    ensure_namespace(state, "demo", 1.0)
    apply_objects(state, [policy()], now=1.0, default_namespace="default")
    objects = registry_objects(
        state.namespaces.values(),
        state.services.values(),
        state.pods.values(),
        state.network,
        policies=state.peerauthentications.values(),
    )
    (tmp_path / "local.yaml").write_text(yaml.safe_dump_all(objects))
    loaded = [o for o in load_objects([tmp_path]) if o["kind"] == "PeerAuthentication"]
    assert [(o["metadata"]["namespace"], o["spec"]) for o in loaded] == [
        ("demo", {"mtls": {"mode": "STRICT"}})
    ]


def test_the_control_plane_serves_xds_and_the_ca_from_the_runtimes_files() -> None:
    args = discovery_args(ControlPlaneOptions(revision="asm-173-3"))
    pairs = dict(zip(args[1::2], args[2::2], strict=False))
    assert pairs["--registry-file"] == "/var/lib/sidemesh/registry"
    assert pairs["--ca-dir"] == "/etc/cacerts"
    assert pairs["--token-file"] == "/var/lib/sidemesh/tokens/tokens.yaml"
    assert pairs["--xds-tls-port"] == "15012"


def test_port_levels_are_applied_with_a_selector_and_refused_without_one() -> None:
    state = empty_state()
    ensure_namespace(state, "demo", 1.0)
    workload = policy()
    workload["metadata"]["name"] = "backend"
    workload["spec"] = {
        "selector": {"matchLabels": {"app": "backend"}},
        "mtls": {"mode": "STRICT"},
        "portLevelMtls": {9090: {"mode": "DISABLE"}},
    }
    applied = apply_objects(state, [workload], now=1.0, default_namespace="default")
    assert applied.lines == ["peerauthentication.security.istio.io/backend created"]
    namespace_wide = policy()
    namespace_wide["spec"]["portLevelMtls"] = {9090: {"mode": "DISABLE"}}
    refused = apply_objects(state, [namespace_wide], now=2.0, default_namespace="default")
    assert refused.errors and "spec.portLevelMtls needs spec.selector" in refused.errors[0]
    assert list(state.peerauthentications) == ["demo/backend"]
