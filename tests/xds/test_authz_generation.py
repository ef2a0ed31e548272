"""AuthorizationPolicy and RequestAuthentication in the generated inbound listener: the
filters sit where Istio puts them on every chain, the cache agrees with the reference
generator and shares bytes between workloads under the same policies, and a real Envoy
accepts everything every value form of Istio's produces (`envoy --mode validate`)."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from envoy.config.listener.v3 import listener_pb2
from test_envoy_acks import NODE, mixed_snapshot
from xds_testkit import to_dict

from sidemesh.api import security
from sidemesh.xds import generate as gen
from sidemesh.xds import inbound
from sidemesh.xds.cache import ResourceCache
from sidemesh.xds.model import MeshSnapshot
from sidemesh.xds.proxy import parse_node

PROXY = parse_node(NODE, {"NAMESPACE": "demo", "SERVICE_ACCOUNT": "web", "LABELS": {"app": "web"}})
CASES = Path(__file__).parent.parent / "data" / "security" / "validation-cases.yaml"


def _valid_cases(namespace: str = "demo") -> tuple[list[Any], list[Any]]:
    """Istio's accepted forms (the validation table's valid cases), moved to `namespace`."""
    import yaml

    policies: list[Any] = []
    authentications: list[Any] = []
    for document in yaml.safe_load_all(CASES.read_text()):
        document.pop("_case")
        if "_err" in document:
            continue
        document["metadata"]["namespace"] = namespace
        document["spec"].pop("selector", None)
        resource = security.validate(document)
        (policies if resource.kind == "AuthorizationPolicy" else authentications).append(resource)
    return policies, authentications


def _with_policies(snapshot: MeshSnapshot) -> MeshSnapshot:
    policies, authentications = _valid_cases()
    policies.append(security.validate({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "audit", "namespace": "demo"},
        "spec": {"action": "AUDIT", "rules": [{"to": [{"operation": {"paths": ["/a*"]}}]}]},
    }))  # fmt: skip
    return replace(snapshot, authorization_policies=tuple(policies),
                   request_authentications=tuple(authentications))  # fmt: skip


def _inbound(resources: gen.GeneratedResources) -> dict[str, Any]:
    (listener,) = [to_dict(m) for m in resources.listeners if m.name == gen.VIRTUAL_INBOUND]
    return listener


def test_every_chain_carries_the_policy_filters_in_istio_order() -> None:
    listener = _inbound(gen.generate(_with_policies(mixed_snapshot()), PROXY))
    for chain in listener["filter_chains"]:
        names = [f["name"] for f in chain["filters"]]
        if names[-1] == "envoy.filters.network.tcp_proxy":
            rbac = [n for n in names if n == "envoy.filters.network.rbac"]
            assert names[: len(rbac)] == rbac == ["envoy.filters.network.rbac"] * 3, chain["name"]
            # over mTLS the telemetry's peer filter follows them (telemetry.peer_certificate_filter)
            tls = chain["name"].endswith("-mtls")
            peer = ["envoy.filters.network.set_filter_state"] if tls else []
            assert names[len(rbac) : -1] == peer, chain["name"]
            continue
        (manager,) = [f for f in chain["filters"] if f["name"].endswith("http_connection_manager")]
        http = [f["name"] for f in manager["typed_config"]["http_filters"]]
        ours = [n for n in http if n.endswith((".rbac", ".jwt_authn"))]
        assert ours == ["envoy.filters.http.jwt_authn", *["envoy.filters.http.rbac"] * 3]
        assert http[-1] == "envoy.filters.http.router"
        actions = [
            f["typed_config"]["rules"].get("action", "ALLOW")
            for f in manager["typed_config"]["http_filters"]
            if f["name"].endswith(".rbac")
        ]
        assert actions == ["LOG", "DENY", "ALLOW"]  # AUDIT, DENY (and CUSTOM), ALLOW


def test_no_policy_no_filters() -> None:
    listener = _inbound(gen.generate(mixed_snapshot(), PROXY))
    text = json.dumps(listener)
    assert "rbac" not in text and "jwt_authn" not in text


def test_cache_matches_the_generator_and_shares_equal_policies() -> None:
    snapshot = _with_policies(mixed_snapshot())
    cache = ResourceCache(snapshot)
    cached = cache.resources_for(PROXY)[gen.TYPE_LISTENER].resources[gen.VIRTUAL_INBOUND]
    assert to_dict(listener_pb2.Listener.FromString(cached.body)) == _inbound(
        gen.generate(snapshot, PROXY)
    )
    twin = replace(PROXY, node_id=NODE.replace("web-abc", "web-twin"), pod_name="web-twin")
    assert cache.resources_for(twin) is cache.resources_for(PROXY)
    # A policy change reaches the inbound listener only.
    cache.set_snapshot(replace(snapshot, version=2, authorization_policies=()))
    after = cache.resources_for(PROXY)[gen.TYPE_LISTENER].resources[gen.VIRTUAL_INBOUND]
    assert after.body != cached.body


def _envoy() -> str | None:
    found = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "envoy"
    return str(found) if found.exists() else shutil.which("envoy")


def test_envoy_accepts_every_form(tmp_path: Path) -> None:
    envoy = _envoy()
    if envoy is None:
        pytest.skip("no envoy binary")
    shape = inbound.proxy_shape(_with_policies(mixed_snapshot()), PROXY)
    listener = to_dict(inbound.inbound_listener(shape, "cluster.local"))
    clusters = [to_dict(c) for c in inbound.inbound_clusters(shape)]
    clusters += [{"name": name, "type": "STATIC", "load_assignment": {"cluster_name": name}}
                 for name in ("sds-grpc", "InboundPassthroughCluster")]  # fmt: skip
    clusters[-2]["typed_extension_protocol_options"] = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}}  # fmt: skip
    config = tmp_path / "envoy.json"
    config.write_text(json.dumps({"node": {"id": "x", "cluster": "x"},
                                  "static_resources": {"listeners": [listener],
                                                       "clusters": clusters}}))  # fmt: skip
    result = subprocess.run([envoy, "--mode", "validate", "-c", str(config), "-l", "error"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
