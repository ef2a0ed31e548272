"""Two real Envoys on 127.0.0.1 meshed by our control plane, without iptables.

Approach: each sidecar binds its virtual listeners where capture would have sent the traffic
(node metadata SIDEMESH_OUTBOUND_BIND / SIDEMESH_INBOUND_BIND). The client sidecar's
`virtualOutbound` listens on 0.0.0.0:Q and the service's VIP:port is 127.0.0.10:Q, so a client
connecting to the VIP lands on the outbound listener with the VIP as its local address. The
sidecars declare TPROXY interception, so the virtual listeners are IP_TRANSPARENT and Envoy
takes that local address as the original destination (as after a TPROXY divert; with REDIRECT
it would read it from conntrack) and hands the connection to the service's own listener
`127.0.0.10_Q` (`bind_to_port: false`). The server "pod" is 127.0.0.20: its sidecar's
`virtualInbound` binds 127.0.0.20:P (the endpoint address the registry publishes) and forwards
to the app on 127.0.0.1:P. The client sidecar speaks SotW ADS, the server sidecar Delta.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import orjson
import pytest
from xds_testkit import Envoy, SdsServer, bootstrap, eventually, free_port, workload_certificate

from sidemesh.security.ca import CertificateAuthority
from sidemesh.security.identity import SpiffeId
from sidemesh.xds.model import Endpoint, MeshSnapshot, PeerAuthentication, Service, ServicePort
from sidemesh.xds.server import ControlPlaneConfig, ControlPlaneServer

SERVER_POD = "127.0.0.20"
CLIENT_POD = "127.0.0.30"
VIP = "127.0.0.10"
NEW_VIP = "127.0.0.11"
HOST = "server.demo.svc.cluster.local"


async def serve_app(port: int, name: str) -> asyncio.Server:
    """An HTTP app on 127.0.0.1:port that answers with its name and the headers it got."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")[1:]
            headers = dict(line.split(": ", 1) for line in lines if ": " in line)
            body = orjson.dumps(
                {"app": name, "headers": {k.lower(): v for k, v in headers.items()}}
            )
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


async def http_get(address: str, port: int, host: str, timeout: float = 3.0) -> dict[str, object]:
    """GET / with a Host header; the parsed JSON body, or an exception if refused/failed."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout)
    try:
        writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(head[:100].decode(errors="replace") or "connection closed")
    result: dict[str, object] = orjson.loads(body)
    return result


async def reachable(address: str, port: int, host: str) -> dict[str, object] | None:
    try:
        return await http_get(address, port, host)
    except (OSError, TimeoutError, ValueError):
        return None


@dataclass
class Mesh:
    control_plane: ControlPlaneServer
    xds_port: int
    outbound_port: int
    app_port: int
    snapshot: MeshSnapshot
    envoys: list[Envoy]

    def publish(self, snapshot: MeshSnapshot) -> None:
        self.snapshot = snapshot
        self.control_plane.set_snapshot(snapshot)

    def synced(self, expected: int = 2) -> bool:
        rows = self.control_plane.ads.status()
        return len(rows) == expected and all(
            t["status"] == "SYNCED" for row in rows for t in row["types"].values()
        )


def initial_snapshot(outbound_port: int, app_port: int, mode: str) -> MeshSnapshot:
    server = Service("demo", "server", VIP, (ServicePort(outbound_port, "http", "HTTP", app_port),))
    endpoint = Endpoint(SERVER_POD, app_port, outbound_port, True, "server", "demo", "server-0",
                        True, (("app", "server"),))  # fmt: skip
    policy = PeerAuthentication("demo", "default", mode)  # type: ignore[arg-type]
    return MeshSnapshot(1, (server,), {server.hostname: (endpoint,)}, (policy,))


def sidecar_config(
    pod_ip: str, name: str, xds: int, sds: int, admin: int, outbound: str, inbound: str, delta: bool
) -> dict[str, object]:
    return bootstrap(
        node_id=f"sidecar~{pod_ip}~{name}-0.demo~demo.svc.cluster.local",
        metadata={"NAMESPACE": "demo", "SERVICE_ACCOUNT": name, "LABELS": {"app": name},
                  "INTERCEPTION_MODE": "TPROXY",
                  "SIDEMESH_OUTBOUND_BIND": outbound, "SIDEMESH_INBOUND_BIND": inbound},
        xds_port=xds, sds_port=sds, admin_port=admin, delta=delta,
    )  # fmt: skip


@pytest.fixture
async def mesh(request: pytest.FixtureRequest) -> AsyncIterator[Mesh]:
    mode = getattr(request, "param", "STRICT")
    now = datetime.datetime.now(datetime.UTC)
    ca = CertificateAuthority.self_signed(trust_domain="cluster.local", now=now)
    root = ca.root_pem().encode()
    xds_port, outbound_port, app_port = free_port(), free_port(), free_port()
    snapshot = initial_snapshot(outbound_port, app_port, mode)
    control_plane = ControlPlaneServer(
        config=ControlPlaneConfig(host="127.0.0.1", plaintext_port=xds_port, tls_port=None,
                                  monitoring_port=0, instance_id="cp-1"),
        snapshot=snapshot,
    )  # fmt: skip
    await control_plane.start()
    app = await serve_app(app_port, "server")
    sds_servers = []
    envoys = []
    for name, pod_ip, outbound, inbound, delta in (
        ("client", CLIENT_POD, f"0.0.0.0:{outbound_port}", f"{CLIENT_POD}:{free_port()}", False),
        ("server", SERVER_POD, f"127.0.0.1:{free_port()}", f"{SERVER_POD}:{app_port}", True),
    ):
        sds = SdsServer(*workload_certificate(ca, SpiffeId("cluster.local", "demo", name)), root)
        await sds.server.start()
        sds_servers.append(sds)
        admin = free_port()
        envoy = Envoy(sidecar_config(pod_ip, name, xds_port, sds.port, admin, outbound, inbound,
                                     delta), admin)  # fmt: skip
        envoy.start()
        envoys.append(envoy)
    state = Mesh(control_plane, xds_port, outbound_port, app_port, snapshot, envoys)
    try:
        await eventually(state.synced)
        yield state
    finally:
        for envoy in envoys:
            envoy.stop()
        app.close()
        for sds in sds_servers:
            await sds.server.stop(None)
        await state.control_plane.stop()


async def test_client_reaches_server_over_mtls_and_server_sees_spiffe_id(mesh: Mesh) -> None:
    await eventually(lambda: reachable(VIP, mesh.outbound_port, HOST))
    client = mesh.envoys[0]
    service_listener = f"listener.{VIP}_{mesh.outbound_port}.downstream_cx_total"
    capture_listener = f"listener.0.0.0.0_{mesh.outbound_port}.downstream_cx_total"
    before = (await client.stat(service_listener), await client.stat(capture_listener))
    reply = await http_get(VIP, mesh.outbound_port, HOST)
    assert reply["app"] == "server"
    xfcc = reply["headers"]["x-forwarded-client-cert"]  # type: ignore[index]
    assert "URI=spiffe://cluster.local/ns/demo/sa/client" in xfcc
    # The capture listener handed the connection to the service's own listener.
    after = (await client.stat(service_listener), await client.stat(capture_listener))
    assert (after[0] - before[0], after[1] - before[1]) == (1, 0)


async def test_moving_a_vip_replaces_only_that_services_listener(mesh: Mesh) -> None:
    await eventually(lambda: reachable(VIP, mesh.outbound_port, HOST))
    before = {
        (i, stat): await envoy.stat(f"listener_manager.listener_{stat}")
        for i, envoy in enumerate(mesh.envoys)
        for stat in ("added", "removed", "modified")
    }
    old = mesh.snapshot
    moved = replace(old.services[0], vip=NEW_VIP)
    mesh.publish(replace(old, version=2, services=(moved,)))
    reply = await eventually(lambda: reachable(NEW_VIP, mesh.outbound_port, HOST), timeout=20)
    assert reply["app"] == "server"
    await eventually(mesh.synced)
    new_listener = f"listener.{NEW_VIP}_{mesh.outbound_port}.downstream_cx_total"
    assert await mesh.envoys[0].stat(new_listener) >= 1
    # Both the SotW (client) and the Delta (server) sidecar: one listener out, one in, and
    # nothing else touched (the capture and inbound listeners were not modified).
    for i, envoy in enumerate(mesh.envoys):
        for stat, change in (("added", 1), ("removed", 1), ("modified", 0)):
            now = await envoy.stat(f"listener_manager.listener_{stat}")
            assert now - before[(i, stat)] == change, (i, stat)
        listeners = await envoy.admin_async("/listeners")
        assert f"{NEW_VIP}_{mesh.outbound_port}" in listeners
        assert f"{VIP}_{mesh.outbound_port}" not in listeners


async def test_strict_refuses_plaintext_to_the_server_sidecar(mesh: Mesh) -> None:
    await eventually(lambda: reachable(VIP, mesh.outbound_port, HOST))
    with pytest.raises((ConnectionError, OSError, TimeoutError)):
        await http_get(SERVER_POD, mesh.app_port, HOST)


@pytest.mark.parametrize("mesh", ["PERMISSIVE"], indirect=True)
async def test_permissive_accepts_plaintext_without_a_forged_identity(mesh: Mesh) -> None:
    reply = await eventually(lambda: reachable(SERVER_POD, mesh.app_port, HOST))
    assert "x-forwarded-client-cert" not in reply["headers"]  # type: ignore[operator]


async def test_new_service_and_endpoint_become_reachable(mesh: Mesh) -> None:
    new_app_port = free_port()
    app = await serve_app(new_app_port, "newcomer")  # no sidecar: plaintext from the client
    try:
        service = Service(
            "demo",
            "newcomer",
            NEW_VIP,
            (ServicePort(mesh.outbound_port, "http-web", "HTTP", new_app_port),),
        )
        endpoint = Endpoint("127.0.0.1", new_app_port, mesh.outbound_port, True, "default",
                            "demo", "newcomer", False)  # fmt: skip
        old = mesh.snapshot
        mesh.publish(
            replace(
                old,
                version=2,
                services=(*old.services, service),
                endpoints={**old.endpoints, service.hostname: (endpoint,)},
            )
        )
        reply = await eventually(
            lambda: reachable(NEW_VIP, mesh.outbound_port, "newcomer.demo"), timeout=20
        )
        assert reply["app"] == "newcomer"
        await eventually(mesh.synced)
    finally:
        app.close()


async def test_control_plane_restart_keeps_traffic_and_proxies_reconnect(mesh: Mesh) -> None:
    await eventually(lambda: reachable(VIP, mesh.outbound_port, HOST))
    await mesh.control_plane.stop(grace=0)
    # Established config keeps serving while the control plane is away.
    assert (await http_get(VIP, mesh.outbound_port, HOST))["app"] == "server"
    restarted = ControlPlaneServer(
        config=ControlPlaneConfig(host="127.0.0.1", plaintext_port=mesh.xds_port, tls_port=None,
                                  monitoring_port=0, instance_id="cp-2"),
        snapshot=mesh.snapshot,
    )  # fmt: skip
    await restarted.start()
    mesh.control_plane = restarted
    await eventually(mesh.synced, timeout=60)
    assert {row["control_plane"] for row in restarted.ads.status()} == {"cp-2"}
    assert (await http_get(VIP, mesh.outbound_port, HOST))["app"] == "server"
