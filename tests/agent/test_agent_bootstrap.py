"""Envoy's bootstrap: a golden file, the parts that vary, and a real Envoy accepting them."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from golden_files import update_golden, updating
from sidemesh.agent.bootstrap import build_bootstrap, node_id, render_bootstrap
from sidemesh.agent.config import AgentFlags, load_settings
from sidemesh.agent.envoy import find_envoy_binary
from sidemesh.agent.settings import AgentSettings

GOLDEN = Path(__file__).parent / "golden" / "bootstrap.json"
ENV = {
    "POD_NAME": "web-7d9f-abcde",
    "POD_NAMESPACE": "shop",
    "SERVICE_ACCOUNT": "web",
    "INSTANCE_IP": "10.1.2.3",
    "CA_ADDR": "istiod-canary.istio-system.svc:15012",
    "TRUST_DOMAIN": "cluster.local",
    "PROXY_CONFIG": '{"terminationDrainDuration":"10s"}',
    "ISTIO_META_APP_CONTAINERS": "web,worker",
    "ISTIO_META_CLUSTER_ID": "Kubernetes",
    "ISTIO_META_INTERCEPTION_MODE": "REDIRECT",
    "ISTIO_META_WORKLOAD_NAME": "web",
    "ISTIO_META_OWNER": "kubernetes://apis/apps/v1/namespaces/shop/deployments/web",
    "ISTIO_META_MESH_ID": "cluster.local",
    "ISTIO_META_POD_PORTS": '[{"containerPort":8080}]',
}


def _settings(tmp_path: Path, env: dict[str, str] | None = None, **flags: Any) -> AgentSettings:
    podinfo = tmp_path / "pod"
    podinfo.mkdir(exist_ok=True)
    (podinfo / "labels").write_text('app="web"\npod-template-hash="7d9f"\n')
    (podinfo / "annotations").write_text('istio.io/rev="canary"\n')
    options: dict[str, Any] = {
        "domain": "shop.svc.cluster.local",
        "config_dir": Path("/etc/istio/proxy"),
        "podinfo_dir": podinfo,
        **flags,
    }
    settings = load_settings({**ENV, **(env or {})}, AgentFlags(**options))
    return dataclasses.replace(settings, version="0.0.0-test")


def _validate(tmp_path: Path, settings: AgentSettings) -> None:
    path = tmp_path / "bootstrap.json"
    path.write_bytes(render_bootstrap(settings))
    result = subprocess.run(
        [
            str(find_envoy_binary()),
            "--mode",
            "validate",
            "-c",
            str(path),
            "--log-level",
            "error",
            "--disable-hot-restart",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_bootstrap_matches_golden(tmp_path: Path) -> None:
    rendered = render_bootstrap(_settings(tmp_path))
    if updating():
        update_golden(GOLDEN, rendered)
    assert orjson.loads(rendered) == orjson.loads(GOLDEN.read_bytes())


def test_real_envoy_accepts_the_golden_bootstrap(tmp_path: Path) -> None:
    _validate(tmp_path, _settings(tmp_path))


@pytest.mark.parametrize(
    ("env", "flags"),
    [
        pytest.param({"CA_ADDR": "127.0.0.1:15012"}, {}, id="ip-address"),
        pytest.param({"CA_ADDR": "10.0.0.1:15010"}, {"xds_plaintext": True}, id="plaintext"),
        pytest.param({"INSTANCE_IP": "fd00::5", "CA_ADDR": "[fd00::1]:15012"}, {}, id="ipv6"),
        pytest.param(
            {"ISTIOD_SAN": "istiod.istio-system.svc", "CA_ADDR": "10.0.0.1:15012"},
            {},
            id="istiod-san",
        ),
    ],
)
def test_real_envoy_accepts_every_variant(
    tmp_path: Path, env: dict[str, str], flags: dict[str, Any]
) -> None:
    _validate(tmp_path, _settings(tmp_path, env, **flags))


def _cluster(bootstrap: dict[str, Any], name: str) -> dict[str, Any]:
    clusters = bootstrap["static_resources"]["clusters"]
    return next(cluster for cluster in clusters if cluster["name"] == name)


def _tls(cluster: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = cluster["transport_socket"]["typed_config"]
    return config


def test_node_identity_is_istios(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert node_id(settings) == "sidecar~10.1.2.3~web-7d9f-abcde.shop~shop.svc.cluster.local"
    node = build_bootstrap(settings)["node"]
    assert node["cluster"] == "web.shop"
    metadata = node["metadata"]
    assert metadata["NAMESPACE"] == "shop"
    assert metadata["SERVICE_ACCOUNT"] == "web"
    assert metadata["LABELS"] == {"app": "web", "pod-template-hash": "7d9f"}
    assert metadata["ISTIO_REVISION"] == "canary"
    assert metadata["APP_CONTAINERS"] == "web,worker"
    assert metadata["POD_PORTS"] == '[{"containerPort":8080}]'  # ISTIO_META_* pass through


def test_control_plane_by_dns_name_is_verified_by_that_name(tmp_path: Path) -> None:
    bootstrap = build_bootstrap(_settings(tmp_path))
    xds = _cluster(bootstrap, "xds-grpc")
    assert xds["type"] == "STRICT_DNS"
    address = xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address["socket_address"]["address"] == "istiod-canary.istio-system.svc"
    tls = _tls(xds)
    assert tls["sni"] == "istiod-canary.istio-system.svc"
    validation = tls["common_tls_context"]["combined_validation_context"]
    assert validation["default_validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": "istiod-canary.istio-system.svc"}}
    ]
    assert validation["validation_context_sds_secret_config"]["name"] == "ROOTCA"
    client_cert = tls["common_tls_context"]["tls_certificate_sds_secret_configs"]
    assert [secret["name"] for secret in client_cert] == ["default"]


def _seconds(duration: str) -> float:
    assert duration.endswith("s"), duration
    return float(duration[:-1])


def test_a_lost_control_plane_is_redialled_within_two_seconds(tmp_path: Path) -> None:
    """Envoy's default back-off grows to 30 s: a restarted control plane waited that long."""
    ads = build_bootstrap(_settings(tmp_path))["dynamic_resources"]["ads_config"]
    (service,) = ads["grpc_services"]
    assert service["envoy_grpc"]["cluster_name"] == "xds-grpc"
    back_off = service["envoy_grpc"]["retry_policy"]["retry_back_off"]
    assert 0 < _seconds(back_off["base_interval"]) < _seconds(back_off["max_interval"]) <= 2


def test_a_vanished_control_plane_is_noticed_by_http2_pings(tmp_path: Path) -> None:
    xds = _cluster(build_bootstrap(_settings(tmp_path)), "xds-grpc")
    options = xds["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    keepalive = options["explicit_http_config"]["http2_protocol_options"]["connection_keepalive"]
    assert _seconds(keepalive["interval"]) + _seconds(keepalive["timeout"]) <= 60


def test_control_plane_by_ip_is_verified_as_an_ip_san(tmp_path: Path) -> None:
    xds = _cluster(build_bootstrap(_settings(tmp_path, {"CA_ADDR": "127.0.0.1:15012"})), "xds-grpc")
    assert xds["type"] == "STATIC"
    tls = _tls(xds)
    assert "sni" not in tls
    matchers = tls["common_tls_context"]["combined_validation_context"][
        "default_validation_context"
    ]["match_typed_subject_alt_names"]
    assert matchers == [{"san_type": "IP_ADDRESS", "matcher": {"exact": "127.0.0.1"}}]


def test_plaintext_only_when_asked(tmp_path: Path) -> None:
    plain = _settings(tmp_path, {"CA_ADDR": "10.0.0.1:15010"}, xds_plaintext=True)
    assert "transport_socket" not in _cluster(build_bootstrap(plain), "xds-grpc")
    default = _settings(tmp_path, {"CA_ADDR": "10.0.0.1:15010"})
    assert "transport_socket" in _cluster(build_bootstrap(default), "xds-grpc")


def test_sds_over_the_agents_unix_socket(tmp_path: Path) -> None:
    settings = _settings(tmp_path, sds_socket=Path("/run/sm/SDS"))
    sds = _cluster(build_bootstrap(settings), "sds-grpc")
    endpoint = sds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"] == {"pipe": {"path": "/run/sm/SDS"}}


def test_health_and_prometheus_listeners_use_the_configured_ports(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path, status_port=25020, admin_port=25000, health_port=25021, prometheus_port=25090
    )
    bootstrap = build_bootstrap(settings)
    assert bootstrap["admin"]["address"]["socket_address"] == {
        "protocol": "TCP",
        "address": "127.0.0.1",
        "port_value": 25000,
    }
    ports = {
        listener["name"]: listener["address"]["socket_address"]["port_value"]
        for listener in bootstrap["static_resources"]["listeners"]
    }
    assert ports == {"prometheus": 25090, "health": 25021}
    agent = _cluster(bootstrap, "agent")
    endpoint = agent["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"]["port_value"] == 25020
