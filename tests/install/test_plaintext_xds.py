"""Plaintext xDS (15010, `grpc-xds`) is declared only when discovery serves it: off by default,
and `pilot.plaintextXds.enabled=true` declares the port and passes discovery `--xds-port`."""

from __future__ import annotations

from typing import Any

import pytest

from sidemesh.cli.discovery import discovery
from sidemesh.install import manifests
from sidemesh.install.overrides import load_install_values

ENABLE = "pilot.plaintextXds.enabled=true"


def _objects(*sets: str) -> dict[str, dict[str, Any]]:
    values, revision = load_install_values([], list(sets), revision="blue")
    return {o["kind"]: o for o in manifests.render(values, revision)}


def _container(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (container,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def _discovery_params(container: dict[str, Any]) -> dict[str, Any]:
    """What `sidemesh discovery` makes of the container's args (the image's ENTRYPOINT is
    `sidemesh`), parsed by its own command line."""
    args = container["args"]
    assert args[0] == "discovery"
    with discovery.make_context("discovery", list(args[1:])) as context:
        return dict(context.params)


def _service_ports(objects: dict[str, dict[str, Any]]) -> dict[str, tuple[int, int]]:
    return {p["name"]: (p["port"], p["targetPort"]) for p in objects["Service"]["spec"]["ports"]}


def _container_ports(objects: dict[str, dict[str, Any]]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in _container(objects)["ports"]}


def test_off_by_default_and_15010_is_declared_nowhere() -> None:
    objects = _objects()
    assert _discovery_params(_container(objects))["xds_port"] == 0
    assert "--xds-port" not in _container(objects)["args"]
    assert "grpc-xds" not in _service_ports(objects)
    assert "grpc-xds" not in _container_ports(objects)
    assert all(15010 not in ports for ports in _service_ports(objects).values())
    assert 15010 not in _container_ports(objects).values()


@pytest.mark.parametrize("sets", [(ENABLE,), ("pilot.plaintextXds={enabled: true}",)])
def test_enabled_declares_15010_and_discovery_serves_it(sets: tuple[str, ...]) -> None:
    objects = _objects(*sets)
    assert _discovery_params(_container(objects))["xds_port"] == 15010
    assert _service_ports(objects)["grpc-xds"] == (15010, 15010)
    assert _container_ports(objects)["grpc-xds"] == 15010


@pytest.mark.parametrize("sets", [(), (ENABLE,)], ids=["default", "plaintext"])
def test_declared_ports_are_exactly_what_discovery_serves(sets: tuple[str, ...]) -> None:
    objects = _objects(*sets)
    params = _discovery_params(_container(objects))
    served = {params["port"], params["xds_tls_port"], params["monitoring_port"], params["xds_port"]}
    served.discard(0)
    assert set(_container_ports(objects).values()) == served
    assert {target for _, target in _service_ports(objects).values()} == served


def test_istio_port_names_are_kept() -> None:
    assert _service_ports(_objects(ENABLE)) == {
        "grpc-xds": (15010, 15010),
        "https-dns": (15012, 15012),
        "https-webhook": (443, 15017),
        "http-monitoring": (15014, 15014),
    }
