"""Container environment and command line, resolved as the kubelet does (downward API too)."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest

from sidemesh.local.env import (
    EnvError,
    PodFacts,
    expand,
    image_repository,
    is_sidemesh_image,
    quantity,
    resolve_argv,
    resolve_env,
)

FACTS = PodFacts(
    name="web-5c7cb75d85-g4htv",
    namespace="demo",
    uid="1234",
    pod_ip="10.244.0.5",
    host_ip="10.244.0.1",
    node_name="sidemesh-local",
    service_account="web",
    labels={"app": "web"},
    annotations={"a": 'say "hi"'},
    node_cpus=8,
    node_memory_bytes=16 << 30,
)
SIDEMESH = ["/venv/bin/sidemesh"]


def _env(container: dict[str, Any], **lookups: dict[str, dict[str, str]]) -> dict[str, str]:
    config_maps = lookups.get("config_maps", {})
    secrets = lookups.get("secrets", {})
    return resolve_env(container, FACTS, config_maps=config_maps.get, secrets=secrets.get)


def _field(path: str) -> dict[str, Any]:
    return {"valueFrom": {"fieldRef": {"fieldPath": path}}}


def test_the_injected_proxys_downward_api() -> None:
    container = {
        "name": "istio-proxy",
        "env": [
            {"name": "POD_NAME", **_field("metadata.name")},
            {"name": "POD_NAMESPACE", **_field("metadata.namespace")},
            {"name": "INSTANCE_IP", **_field("status.podIP")},
            {"name": "SERVICE_ACCOUNT", **_field("spec.serviceAccountName")},
            {"name": "HOST_IP", **_field("status.hostIP")},
            {"name": "ISTIO_META_NODE_NAME", **_field("spec.nodeName")},
            {"name": "APP", **_field("metadata.labels['app']")},
            {
                "name": "ISTIO_CPU_LIMIT",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "0"}},
            },
            {
                "name": "MEMORY_MI",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
            },
        ],
        "resources": {"limits": {"cpu": "2000m", "memory": "1024Mi"}},
    }
    env = _env(container)
    assert {k: env[k] for k in env if k not in ("PATH", "HOSTNAME")} == {
        "POD_NAME": "web-5c7cb75d85-g4htv",
        "POD_NAMESPACE": "demo",
        "INSTANCE_IP": "10.244.0.5",
        "SERVICE_ACCOUNT": "web",
        "HOST_IP": "10.244.0.1",
        "ISTIO_META_NODE_NAME": "sidemesh-local",
        "APP": "web",
        "ISTIO_CPU_LIMIT": "2",
        "MEMORY_MI": "1024",
    }
    assert env["HOSTNAME"] == "web-5c7cb75d85-g4htv"


def test_missing_limit_is_the_node_capacity_and_rounds_up() -> None:
    env = _env(
        {
            "env": [
                {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                {"name": "REQ", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu"}}},
                {
                    "name": "MILLI",
                    "valueFrom": {
                        "resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}
                    },
                },
            ],
            "resources": {"requests": {"cpu": "250m"}},
        }
    )
    assert (env["CPU"], env["REQ"], env["MILLI"]) == ("8", "1", "250")


def test_dependent_variables_and_escapes() -> None:
    env = _env(
        {
            "env": [
                {"name": "NS", **_field("metadata.namespace")},
                {"name": "DOMAIN", "value": "$(NS).svc.cluster.local"},
                {"name": "LITERAL", "value": "$$(NS) $(UNDEFINED) $5"},
            ]
        }
    )
    assert env["DOMAIN"] == "demo.svc.cluster.local"
    assert env["LITERAL"] == "$(NS) $(UNDEFINED) $5"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "a"),
        ("$(A)$(B)", "ab"),
        ("$$(A)", "$(A)"),
        ("$(A", "$(A"),
        ("$", "$"),
        ("x$(MISSING)y", "x$(MISSING)y"),
        ("$$$(A)", "$a"),
    ],
)
def test_expand(text: str, expected: str) -> None:
    assert expand(text, {"A": "a", "B": "b"}) == expected


def test_config_maps_secrets_and_env_from() -> None:
    container = {
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
        "env": [
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}},
            {
                "name": "OPTIONAL",
                "valueFrom": {"configMapKeyRef": {"name": "none", "key": "k", "optional": True}},
            },
        ],
    }
    env = _env(
        container, config_maps={"settings": {"MODE": "fast"}}, secrets={"db": {"pw": "hunter2"}}
    )
    assert env["CFG_MODE"] == "fast" and env["PASSWORD"] == "hunter2" and "OPTIONAL" not in env
    with pytest.raises(EnvError, match='couldn\'t find key pw in secret "db"'):
        _env(container, config_maps={"settings": {}}, secrets={"db": {}})
    with pytest.raises(EnvError, match='configmap "settings" not found'):
        _env(container)


def test_unsupported_field_is_refused() -> None:
    with pytest.raises(EnvError, match="unsupported fieldRef"):
        _env({"env": [{"name": "X", **_field("status.phase")}]})


def test_argv_for_the_injected_containers() -> None:
    init = {
        "name": "istio-init",
        "image": "ghcr.io/sidemesh/sidemesh:0.1.0",
        "args": ["iptables", "-p", "15001"],
    }
    assert resolve_argv(init, {}, sidemesh=SIDEMESH) == [*SIDEMESH, "iptables", "-p", "15001"]
    proxy = {
        "name": "istio-proxy",
        "image": "registry.local:5000/mesh/sidemesh@sha256:ab",
        "args": ["agent", "--domain", "$(POD_NAMESPACE).svc.cluster.local"],
    }
    assert resolve_argv(proxy, {"POD_NAMESPACE": "demo"}, sidemesh=SIDEMESH) == [
        *SIDEMESH,
        "agent",
        "--domain",
        "demo.svc.cluster.local",
    ]


def test_argv_for_other_images_needs_a_command() -> None:
    app = {
        "name": "web",
        "image": "python:3.11",
        "command": ["python3", "-m", "http.server"],
        "args": ["$(PORT)"],
    }
    assert resolve_argv(app, {"PORT": "8080"}, sidemesh=SIDEMESH) == [
        "python3",
        "-m",
        "http.server",
        "8080",
    ]
    with pytest.raises(EnvError, match="does not pull or run images"):
        resolve_argv({"name": "nginx", "image": "nginx"}, {}, sidemesh=SIDEMESH)


@pytest.mark.parametrize(
    ("image", "repository", "ours"),
    [
        ("ghcr.io/sidemesh/sidemesh:0.1.0", "ghcr.io/sidemesh/sidemesh", True),
        ("localhost:5000/sidemesh", "localhost:5000/sidemesh", True),
        ("sidemesh", "sidemesh", True),
        ("docker.io/library/python:3.11", "docker.io/library/python", False),
        ("ghcr.io/sidemesh/sidemesh-extra:1", "ghcr.io/sidemesh/sidemesh-extra", False),
    ],
)
def test_image_repository(image: str, repository: str, ours: bool) -> None:
    assert image_repository(image) == repository
    assert is_sidemesh_image(image) is ours


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("100m", Fraction(1, 10)),
        ("2", Fraction(2)),
        ("1.5", Fraction(3, 2)),
        ("128Mi", Fraction(128 << 20)),
        ("1G", Fraction(10**9)),
        ("2e3", Fraction(2000)),
        ("0", Fraction(0)),
    ],
)
def test_quantities(text: str, value: Fraction) -> None:
    assert quantity(text) == value


def test_a_bad_quantity_names_the_field_and_the_text() -> None:
    container = {
        "resources": {"limits": {"cpu": "12 cores"}},
        "env": [{"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}],
    }
    with pytest.raises(EnvError, match=r"resourceFieldRef limits.cpu: .*cores"):
        _env(container)
