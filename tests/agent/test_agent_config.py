"""Settings from env and flags: precedence, Istio's defaults, and errors that name the setting."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest

from sidemesh.agent.config import AgentFlags, SettingsError, load_settings
from sidemesh.agent.metrics import AppMetricsTarget
from sidemesh.agent.probes import AppProbe, GrpcProbe, HttpProbe, TcpProbe

BASE = {"POD_NAME": "web-0", "POD_NAMESPACE": "shop", "SERVICE_ACCOUNT": "web"}


def _load(env: dict[str, str] | None = None, tmp: Path | None = None, **flags: Any) -> Any:
    if tmp is not None:
        flags.setdefault("podinfo_dir", tmp)
    return load_settings({**BASE, **(env or {})}, AgentFlags(**flags))


@pytest.mark.parametrize("missing", ["POD_NAME", "POD_NAMESPACE", "SERVICE_ACCOUNT"])
def test_missing_identity_env_is_named(missing: str) -> None:
    env = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(SettingsError, match=missing):
        load_settings(env, AgentFlags())


def test_istio_defaults(tmp_path: Path) -> None:
    settings = _load(tmp=tmp_path)
    assert settings.identity.spiffe_id == "spiffe://cluster.local/ns/shop/sa/web"
    assert settings.identity.domain == "shop.svc.cluster.local"
    assert settings.control_plane.ca_address == "istiod.istio-system.svc:15012"
    assert settings.control_plane.discovery_address == "istiod.istio-system.svc:15012"
    assert settings.control_plane.plaintext is False
    ports = settings.ports
    assert (ports.status, ports.admin, ports.health, ports.prometheus) == (
        15020,
        15000,
        15021,
        15090,
    )
    paths = settings.paths
    assert paths.bootstrap == Path("/etc/istio/proxy/envoy-rev.json")
    assert paths.sds_socket == Path("/etc/istio/proxy/SDS")
    assert paths.token == Path("/var/run/secrets/tokens/istio-token")
    assert paths.root_cert == Path("/var/run/secrets/istio/root-cert.pem")
    assert paths.output_certs is None
    assert settings.envoy.termination_drain_duration == 5.0
    assert settings.envoy.drain_duration == 45.0
    assert settings.envoy.concurrency == 2
    assert (settings.envoy.log_level, settings.envoy.component_log_level) == (
        "warning",
        "misc:error",
    )
    assert settings.cert_ttl == 24 * 3600
    assert settings.renew_fraction == 0.5
    assert settings.agent_log_level == logging.INFO


def test_discovery_address_from_proxy_config_beats_ca_addr(tmp_path: Path) -> None:
    settings = _load(
        {
            "CA_ADDR": "istiod-canary.istio-system.svc:15012",
            "PROXY_CONFIG": '{"discoveryAddress": "xds.example:15012"}',
        },
        tmp_path,
    )
    assert settings.control_plane.discovery_address == "xds.example:15012"
    assert settings.control_plane.ca_address == "istiod-canary.istio-system.svc:15012"


@pytest.mark.parametrize(
    ("env", "flag", "expected"),
    [
        ({}, None, False),
        ({"SIDEMESH_XDS_PLAINTEXT": "true"}, None, True),
        ({"SIDEMESH_XDS_PLAINTEXT": "true"}, False, False),
        ({}, True, True),
    ],
)
def test_plaintext_only_when_explicit(
    tmp_path: Path, env: dict[str, str], flag: bool | None, expected: bool
) -> None:
    plaintext = _load({"CA_ADDR": "istiod:15010", **env}, tmp_path, xds_plaintext=flag)
    assert plaintext.control_plane.plaintext is expected


def test_flags_beat_env_beat_defaults(tmp_path: Path) -> None:
    env = {"SIDEMESH_SDS_SOCKET": "/env/SDS", "SECRET_TTL": "1h", "OUTPUT_CERTS": "/env/certs"}
    settings = _load(env, tmp_path, sds_socket=Path("/flag/SDS"), cert_ttl="30m")
    assert settings.paths.sds_socket == Path("/flag/SDS")
    assert settings.paths.output_certs == Path("/env/certs")
    assert settings.cert_ttl == 1800


def test_proxy_config_drives_envoy_options(tmp_path: Path) -> None:
    settings = _load(
        {
            "PROXY_CONFIG": '{"terminationDrainDuration": "1m30s", "concurrency": 4,'
            ' "drainDuration": "10s", "statusPort": 16020}'
        },
        tmp_path,
    )
    assert settings.envoy.termination_drain_duration == 90
    assert settings.envoy.drain_duration == 10
    assert settings.envoy.concurrency == 4
    assert settings.ports.status == 16020


@pytest.mark.parametrize(
    ("proxy_config", "cpu_limit", "expected"),
    [('{"concurrency": 0}', "", None), ("", "3", 3), ("", "0.5", 1), ("", "", 2), ("", "x", 2)],
)
def test_concurrency(
    tmp_path: Path, proxy_config: str, cpu_limit: str, expected: int | None
) -> None:
    env = {"PROXY_CONFIG": proxy_config, "ISTIO_CPU_LIMIT": cpu_limit}
    assert _load(env, tmp_path).envoy.concurrency == expected


@pytest.mark.parametrize(
    ("env", "flags", "message"),
    [
        ({"PROXY_CONFIG": "{not json: ["}, {}, "PROXY_CONFIG"),
        ({"PROXY_CONFIG": '{"bogusField": 1}'}, {}, "PROXY_CONFIG: bogusField"),
        ({"PROXY_CONFIG": '{"terminationDrainDuration": "soon"}'}, {}, "terminationDrainDuration"),
        ({"CA_ADDR": "no-port"}, {}, "CA_ADDR"),
        ({"PROXY_CONFIG": '{"discoveryAddress": "fd00::1:15012"}'}, {}, "discoveryAddress"),
        ({"SIDEMESH_XDS_PLAINTEXT": "maybe"}, {}, "SIDEMESH_XDS_PLAINTEXT"),
        ({}, {"status_port": 15000}, "ports must differ"),
        ({}, {"admin_port": 70000}, "--admin-port"),
        ({}, {"sds_socket": Path("/" + "x" * 120)}, "longer than 107 bytes"),
        ({}, {"proxy_log_level": "loud"}, "Envoy log level 'loud'"),
        ({}, {"proxy_component_log_level": "misc"}, "component:level"),
        ({}, {"agent_log_level": "default:chatty"}, "--log_output_level"),
        ({"SECRET_TTL": "0s"}, {}, "under 1s"),
        ({}, {"renew_fraction": 1.5}, "between 0 and 1"),
        ({"ISTIO_KUBE_APP_PROBERS": "[]"}, {}, "ISTIO_KUBE_APP_PROBERS must be a JSON object"),
        (
            {"ISTIO_KUBE_APP_PROBERS": '{"/app-health/web/readyz": {"httpGet": {"port": "http"}}}'},
            {},
            "named ports",
        ),
        (
            {"ISTIO_KUBE_APP_PROBERS": '{"/elsewhere": {"tcpSocket": {"port": 1}}}'},
            {},
            "does not start with /app-health/",
        ),
        (
            {"ISTIO_KUBE_APP_PROBERS": '{"/app-health/web/livez": {"exec": {}}}'},
            {},
            "httpGet, tcpSocket or grpc",
        ),
        ({"ISTIO_PROMETHEUS_ANNOTATIONS": '{"scrape": "true", "port": "http"}'}, {}, "port"),
    ],
)
def test_errors_name_the_setting(
    tmp_path: Path, env: dict[str, str], flags: dict[str, Any], message: str
) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        _load(env, tmp_path, **flags)


def test_app_probers_are_parsed(tmp_path: Path) -> None:
    probers = (
        '{"/app-health/web/readyz": {"httpGet": {"path": "ready", "port": 8080, "scheme": "HTTPS",'
        ' "httpHeaders": [{"name": "X-Probe", "value": "1"}]}, "timeoutSeconds": 3},'
        ' "/app-health/web/livez": {"tcpSocket": {"port": "8081"}},'
        ' "/app-health/rpc/startupz": {"grpc": {"port": 9000, "service": "svc"}}}'
    )
    settings = _load({"ISTIO_KUBE_APP_PROBERS": probers}, tmp_path)
    assert settings.app_probers == {
        "/app-health/web/readyz": AppProbe(
            HttpProbe(port=8080, path="/ready", scheme="HTTPS", headers=(("X-Probe", "1"),)),
            timeout=3.0,
        ),
        "/app-health/web/livez": AppProbe(TcpProbe(port=8081), timeout=1.0),
        "/app-health/rpc/startupz": AppProbe(GrpcProbe(port=9000, service="svc"), timeout=1.0),
    }


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ("", None),
        ('{"scrape": "true"}', AppMetricsTarget(port=80, path="/metrics")),
        ('{"scrape": "true", "port": "9090", "path": "/m"}', AppMetricsTarget(9090, "/m")),
        ('{"port": "9090"}', None),  # without scrape: "true" Prometheus never scraped the app
        ('{"scrape": "false", "port": "9090"}', None),
        ('{"scrape": "true", "port": "15020"}', None),  # would scrape ourselves forever
    ],
)
def test_prometheus_annotations(
    tmp_path: Path, annotations: str, expected: AppMetricsTarget | None
) -> None:
    env = {"ISTIO_PROMETHEUS_ANNOTATIONS": annotations}
    assert _load(env, tmp_path).app_metrics == expected


def test_podinfo_and_metadata(tmp_path: Path) -> None:
    (tmp_path / "labels").write_text('app="web"\nnote="say \\"hi\\""\n')
    (tmp_path / "annotations").write_text('istio.io/rev="canary"\n')
    settings = _load(
        {"ISTIO_META_MESH_ID": "mesh1", "ISTIO_META_CLUSTER_ID": "east", "ISTIO_META_": "x"},
        tmp_path,
    )
    assert settings.labels == {"app": "web", "note": 'say "hi"'}
    assert settings.revision == "canary"
    assert settings.mesh_id == "mesh1"
    assert settings.cluster_id == "east"
    assert settings.metadata == {"MESH_ID": "mesh1", "CLUSTER_ID": "east"}


def test_domain_from_the_injectors_unexpanded_arg(tmp_path: Path) -> None:
    settings = _load(tmp=tmp_path, domain="$(POD_NAMESPACE).svc.cluster.local")
    assert settings.identity.domain == "shop.svc.cluster.local"


def test_envoy_component_levels_inside_proxy_log_level(tmp_path: Path) -> None:
    settings = _load(
        tmp=tmp_path, proxy_log_level="debug,upstream:trace", proxy_component_log_level="misc:error"
    )
    assert (settings.envoy.log_level, settings.envoy.component_log_level) == (
        "debug",
        "upstream:trace",
    )
