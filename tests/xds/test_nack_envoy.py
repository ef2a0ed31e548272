"""A push a real Envoy refuses (NACK): the control plane records it per proxy and type with
Envoy's own message, shows it in `proxy-status` (NACK column, message in `--details`), counts
it in `pilot_total_xds_rejects`, and Envoy keeps serving what it had. The next good push
clears it.

The refused resource is forged through a test hook on the resource cache (the generator never
makes one on purpose): a listener on an address that is not an IP, which Envoy refuses while
decoding it. Next to it, a valid listener answering `v1` directly shows Envoy still serving.
"""

from __future__ import annotations

import asyncio
import urllib.request
from dataclasses import replace
from typing import Any

from click.testing import CliRunner
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2,
)
from envoy_ack_kit import connected_envoy
from google.protobuf import json_format
from test_envoy_acks import (  # noqa: F401  (ca, control_plane: the fixtures)
    ca,
    control_plane,
    mixed_snapshot,
)
from xds_testkit import eventually, free_port

from sidemesh.cli.proxy_status import proxy_status
from sidemesh.security.ca import CertificateAuthority
from sidemesh.xds.cache import Resource, TypedResources
from sidemesh.xds.proxy import ProxyInfo
from sidemesh.xds.resource_names import TYPE_LISTENER
from sidemesh.xds.server import ControlPlaneServer

HCM = (
    "type.googleapis.com/" + http_connection_manager_pb2.HttpConnectionManager.DESCRIPTOR.full_name
)


def listener(document: dict[str, Any]) -> Resource:
    message = json_format.ParseDict(document, listener_pb2.Listener())
    return Resource.of(TYPE_LISTENER, message.name, message.SerializeToString())


def answering_listener(port: int, body: str) -> Resource:
    """A listener on 127.0.0.1:`port` answering every request with `body`."""
    route = {
        "match": {"prefix": "/"},
        "direct_response": {"status": 200, "body": {"inline_string": body}},
    }
    manager = {
        "@type": HCM,
        "stat_prefix": "probe",
        "route_config": {
            "name": "probe",
            "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    return listener({
        "name": "nack-probe",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": manager}]}],
    })  # fmt: skip


FORGED = listener({
    "name": "forged-bad-address",
    "address": {"socket_address": {"address": "not-an-ip", "port_value": 1}},
})  # fmt: skip


class Forger:
    """Wraps the cache's `resources_for`: adds the probe listener, and the forged one while
    `poisoned`. Memoised, so unchanged resources stay the same objects (ADS compares those)."""

    def __init__(self, server: ControlPlaneServer, probe: Resource) -> None:
        self.original = server.ads.cache.resources_for
        self.probe = probe
        self.poisoned = False
        self.memo: dict[tuple[int, bool], tuple[TypedResources, TypedResources]] = {}
        server.ads.cache.resources_for = self  # type: ignore[method-assign]

    def __call__(self, proxy: ProxyInfo) -> dict[str, TypedResources]:
        resources = dict(self.original(proxy))
        listeners = resources[TYPE_LISTENER]
        key = (id(listeners), self.poisoned)
        if key not in self.memo:
            extra = [self.probe, *([FORGED] if self.poisoned else [])]
            typed = TypedResources.of(TYPE_LISTENER, [*listeners.resources.values(), *extra])
            self.memo[key] = (listeners, typed)  # keeps `listeners` alive: its id stays unique
        resources[TYPE_LISTENER] = self.memo[key][1]
        return resources


def get(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        return str(response.read().decode())


def lds(server: ControlPlaneServer) -> dict[str, Any]:
    rows = server.ads.status()
    state: dict[str, Any] = rows[0]["types"].get("lds", {}) if len(rows) == 1 else {}
    return state


async def test_a_refused_push_is_shown_and_the_proxy_keeps_serving(
    control_plane: ControlPlaneServer,  # noqa: F811
    ca: CertificateAuthority,  # noqa: F811
) -> None:
    probe_port = free_port()
    forger = Forger(control_plane, answering_listener(probe_port, "v1"))
    async with connected_envoy(ca, control_plane) as envoy:
        await eventually(lambda: lds(control_plane).get("status") == "SYNCED", timeout=30)
        good_version = lds(control_plane)["acked"]
        assert await asyncio.to_thread(get, probe_port) == "v1"

        forger.poisoned = True
        control_plane.set_snapshot(replace(mixed_snapshot(), version=2))
        await eventually(lambda: lds(control_plane).get("status") == "NACK", timeout=30)

        state = lds(control_plane)
        assert "malformed IP address: not-an-ip" in state["error"]  # Envoy's own words
        assert state["acked"] == good_version and state["sent"] != good_version
        assert control_plane.xds_metrics.nacks == {"lds": 1}
        assert 'pilot_total_xds_rejects{type="lds"} 1' in control_plane.render_metrics()
        # Envoy refused it and still serves what it had.
        assert await envoy.stat("listener_manager.lds.update_rejected") >= 1
        assert "forged-bad-address" not in await envoy.admin_async("/listeners")
        assert await asyncio.to_thread(get, probe_port) == "v1"

        monitoring = f"127.0.0.1:{control_plane.ports['monitoring']}"
        shown = await asyncio.to_thread(
            CliRunner().invoke, proxy_status, ["--address", monitoring, "--details"]
        )
        assert shown.exit_code == 0, shown.output
        table, *details = shown.output.splitlines()[1:]
        assert table.split()[:6] == ["web-abc.demo", "Kubernetes", "SYNCED", "NACK", "SYNCED",
                                     "NOT"]  # fmt: skip
        assert any(
            line.startswith("web-abc.demo LDS NACK: ") and "malformed IP address" in line
            for line in details
        ), shown.output
        assert f"  refused version {state['sent']}, still serving {good_version}" in details

        forger.poisoned = False
        control_plane.set_snapshot(replace(mixed_snapshot(), version=3))
        await eventually(lambda: lds(control_plane).get("status") == "SYNCED", timeout=30)
        assert lds(control_plane)["error"] is None
        assert control_plane.xds_metrics.nacks == {"lds": 1}  # counted once, not re-sent
