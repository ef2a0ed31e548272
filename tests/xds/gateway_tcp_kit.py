"""Gateway TLS and TCP servers from tests: the VirtualService rules they follow, backends on
127.0.0.1 (a TLS server answering each line, registered as a Service and its Pod), a snapshot
built with no errors, and exchanges through a real Envoy gateway."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from envoy_ack_kit import synced
from test_gateway_listeners import _pem_pair
from xds_testkit import Envoy, eventually

from sidemesh.api.config import MeshConfig
from sidemesh.xds.builder import build_snapshot
from sidemesh.xds.convert import object_key
from sidemesh.xds.model import MeshSnapshot
from sidemesh.xds.server import ControlPlaneServer

SECURE = "secure.shop.svc.cluster.local"
OTHER = "other.shop.svc.cluster.local"
DATABASE = "db.shop.svc.cluster.local"
IO_TIMEOUT = 10.0  # one exchange through the gateway; a stuck one counts as not yet routed


def routes(name: str, hosts: list[str], *, tls: list[Any] | None = None,
           tcp: list[Any] | None = None, gateways: tuple[str, ...] = ("gw",),
           created: str | None = None) -> dict[str, Any]:  # fmt: skip
    spec: dict[str, Any] = {"hosts": hosts, "gateways": list(gateways)}
    if tls:
        spec["tls"] = tls
    if tcp:
        spec["tcp"] = tcp
    metadata: dict[str, Any] = {"name": name, "namespace": "edge"}
    if created:
        metadata["creationTimestamp"] = created
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": metadata, "spec": spec}  # fmt: skip


def to(host: str, number: int, **match: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {"route": [{"destination": {"host": host, "port": {"number": number}}}]}
    if match:
        rule["match"] = [match]
    return rule


def backend_objects(name: str, port: int, port_name: str) -> list[dict[str, Any]]:
    """A Service in `shop` whose one endpoint (no sidecar) listens on 127.0.0.1:`port`."""
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "shop"},
         "spec": {"clusterIP": "10.96.1.1" if name == "secure" else f"10.96.1.{port % 200 + 2}",
                  "selector": {"app": name},
                  "ports": [{"name": port_name, "port": 443 if port_name == "https" else 5432,
                             "targetPort": port}]}},
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": f"{name}-0", "namespace": "shop", "labels": {"app": name}},
         "status": {"podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}},
    ]  # fmt: skip


def checked_snapshot(
    objects: list[dict[str, Any]], *, mesh: MeshConfig | None = None
) -> MeshSnapshot:
    """The snapshot of `objects` (version 1), asserting the build reported no errors."""
    errors: list[str] = []
    snap = build_snapshot({object_key(o): o for o in objects}, mesh=mesh or MeshConfig(),
                          version=1, errors=errors)  # fmt: skip
    assert errors == []
    return snap


async def gateway_serving(control_plane: ControlPlaneServer, envoy: Envoy, listeners: int) -> None:
    """Wait until the gateway took every resource without a NACK and `listeners` are active."""
    await eventually(lambda: synced(control_plane, "cds", "eds", "lds"), timeout=30)
    assert control_plane.xds_metrics.nacks == {}, control_plane.ads.status()
    await eventually(lambda: envoy.stat_is("listener_manager.total_listeners_active", listeners))


@asynccontextmanager
async def database_backend() -> AsyncIterator[int]:
    """A plain TCP server on 127.0.0.1 answering one line with `db: line`; its port."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"db: " + await reader.readline())
        await writer.drain()
        writer.close()

    database = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        yield database.sockets[0].getsockname()[1]
    finally:
        database.close()
        await database.wait_closed()


@asynccontextmanager
async def tls_backend(directory: Path, host: str) -> AsyncIterator[tuple[int, bytes]]:
    """A TLS server for `host` that answers each line with `host: line`; its port and the
    DER certificate a client should see."""
    certificate, key = _pem_pair(host)
    (directory / f"{host}.crt").write_text(certificate)
    (directory / f"{host}.key").write_text(key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / f"{host}.crt", directory / f"{host}.key")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        writer.write(f"{host}: ".encode() + line)
        await writer.drain()
        writer.close()

    backend = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    der = ssl.PEM_cert_to_DER_cert(certificate)
    try:
        yield backend.sockets[0].getsockname()[1], der
    finally:
        backend.close()
        await backend.wait_closed()


async def tls_exchange(
    port: int, sni: str, trust_pem: str, *, verify_name: bool = True
) -> tuple[bytes, bytes] | None:
    """A TLS connection to the gateway with SNI `sni`: the peer's certificate (DER) and the
    answer to one line; None while the connection is refused or closed."""
    context = ssl.create_default_context(cadata=trust_pem)
    context.check_hostname = verify_name

    async def exchange() -> tuple[bytes, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context,
                                                       server_hostname=sni)  # fmt: skip
        try:
            peer = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            writer.write(b"hello\n")
            await writer.drain()
            return peer, await reader.readline()
        finally:
            writer.close()

    try:
        found = await asyncio.wait_for(exchange(), IO_TIMEOUT)
    except (OSError, ssl.SSLError, TimeoutError):
        return None
    return found if found[1] else None
