"""Gateway TLS passthrough and TCP servers (`xds.gateway_passthrough`): the chains they get,
Istio's rules for which `tls`/`tcp` rule serves them, and a real Envoy gateway forwarding a
client's TLS to the backend chosen by SNI (the client sees the backend's own certificate) and
raw TCP by port."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from test_envoy_acks import ca  # noqa: F401  (the fixture)
from test_gateway_envoy_acks import gateway_envoy, synced
from test_gateway_listeners import (
    CERT,
    KEY,
    _pem_pair,
    gateway,
    listeners_json,
    secret,
    server,
    snapshot,
)
from xds_testkit import eventually, free_port

from sidemesh.api.config import MeshConfig
from sidemesh.security.ca import CertificateAuthority
from sidemesh.xds.builder import build_snapshot
from sidemesh.xds.convert import object_key

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


def clusters_of(chain: dict[str, Any]) -> str:
    return str(chain["filters"][0]["typed_config"]["cluster"])


# --- generation ---------------------------------------------------------------------------------


def test_a_passthrough_server_routes_by_sni_to_outbound_clusters_without_terminating() -> None:
    snap = snapshot(
        gateway("gw", [server(443, "TLS", ["*.example.com"], tls={"mode": "PASSTHROUGH"})]),
        routes("secure", ["secure.example.com", "other.example.com"], tls=[
            to(SECURE, 443, sniHosts=["secure.example.com"]),
            to(OTHER, 443, sniHosts=["other.example.com", "secure.example.com"]),
        ]),
    )  # fmt: skip
    listener = listeners_json(snap)["0.0.0.0_8443"]  # the gateway Service's 443 → 8443
    filters = [f["name"] for f in listener["listener_filters"]]
    assert filters == ["envoy.filters.listener.tls_inspector"]
    chains = listener["filter_chains"]
    # The name the first rule took stays with it; the client's TLS is forwarded as it is.
    assert [c["filter_chain_match"]["server_names"] for c in chains] == [
        ["secure.example.com"], ["other.example.com"]]  # fmt: skip
    assert [clusters_of(c) for c in chains] == [f"outbound|443||{SECURE}", f"outbound|443||{OTHER}"]
    assert all("transport_socket" not in c for c in chains)


def test_sni_hosts_are_cut_down_to_the_servers_hosts() -> None:
    snap = snapshot(
        gateway("gw", [server(9443, "TLS", ["a.example.com"]),  # mode unset: PASSTHROUGH
                       server(9443, "TLS", ["b.example.com"])]),
        routes("wild", ["*.example.com"], tls=[to(SECURE, 443, sniHosts=["*.example.com"])]),
    )  # fmt: skip
    chains = listeners_json(snap)["0.0.0.0_9443"]["filter_chains"]
    assert [c["filter_chain_match"]["server_names"] for c in chains] == [
        ["a.example.com"], ["b.example.com"]]  # fmt: skip


def test_https_and_passthrough_share_a_port_and_https_keeps_its_names() -> None:
    snap = snapshot(
        gateway("gw", [
            server(443, "HTTPS", ["a.example.com"], tls={"mode": "SIMPLE", "credentialName": "c"}),
            server(443, "HTTPS", ["b.example.com"], tls={"mode": "PASSTHROUGH"}),
        ]),
        secret("c", tls_crt=CERT, tls_key=KEY),
        routes("pass", ["b.example.com"], tls=[to(SECURE, 443, sniHosts=["b.example.com"])]),
    )  # fmt: skip
    chains = listeners_json(snap)["0.0.0.0_8443"]["filter_chains"]
    names = {c["filter_chain_match"]["server_names"][0]: c for c in chains}
    assert sorted(names) == ["a.example.com", "b.example.com"]
    assert "transport_socket" in names["a.example.com"]  # terminated here
    assert clusters_of(names["b.example.com"]) == f"outbound|443||{SECURE}"


def test_matches_for_another_port_or_gateway_do_not_apply() -> None:
    snap = snapshot(
        gateway("gw", [server(9443, "TLS", ["*"])]),
        routes("pass", ["*.example.com"], gateways=("gw", "other"), tls=[
            to(OTHER, 443, sniHosts=["a.example.com"], port=1234),
            to(OTHER, 443, sniHosts=["a.example.com"], gateways=["other"]),
            to(SECURE, 443, sniHosts=["a.example.com"], port=9443),
        ]),
    )  # fmt: skip
    chains = listeners_json(snap)["0.0.0.0_9443"]["filter_chains"]
    assert [clusters_of(c) for c in chains] == [f"outbound|443||{SECURE}"]


def test_a_server_no_rule_routes_gets_no_listener() -> None:
    """Envoy refuses a listener without filter chains; the port opens when a route comes."""
    snap = snapshot(gateway("gw", [server(9443, "TLS", ["a.example.com"]),
                                   server(31400, "TCP", ["*"])]))  # fmt: skip
    assert listeners_json(snap) == {}


def test_a_tcp_server_takes_the_first_tcp_rule_that_applies() -> None:
    snap = snapshot(
        gateway("gw", [server(31400, "TCP", ["*"]), server(31401, "TCP", ["*"])]),
        routes("db", ["*"], tcp=[to(OTHER, 5432, port=31401), to(DATABASE, 5432)]),
    )  # fmt: skip
    found = listeners_json(snap)
    first, second = found["0.0.0.0_31400"], found["0.0.0.0_31401"]
    assert "listener_filters" not in first
    assert [clusters_of(c) for c in first["filter_chains"]] == [f"outbound|5432||{DATABASE}"]
    assert [clusters_of(c) for c in second["filter_chains"]] == [f"outbound|5432||{OTHER}"]
    assert "filter_chain_match" not in first["filter_chains"][0]


def test_weighted_tcp_destinations_split_connections() -> None:
    rule = {
        "route": [
            {"destination": {"host": DATABASE, "port": {"number": 5432}}, "weight": 80},
            {"destination": {"host": OTHER, "port": {"number": 5432}}, "weight": 20},
        ]
    }
    snap = snapshot(gateway("gw", [server(31400, "TCP", ["*"])]), routes("db", ["*"], tcp=[rule]))
    config = listeners_json(snap)["0.0.0.0_31400"]["filter_chains"][0]["filters"][0]
    assert config["typed_config"]["weighted_clusters"]["clusters"] == [
        {"name": f"outbound|5432||{DATABASE}", "weight": 80},
        {"name": f"outbound|5432||{OTHER}", "weight": 20},
    ]


# --- a real Envoy gateway -----------------------------------------------------------------------


def _backend_objects(name: str, port: int, port_name: str) -> list[dict[str, Any]]:
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


@asynccontextmanager
async def _tls_backend(directory: Path, host: str) -> AsyncIterator[tuple[int, bytes]]:
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


async def _tls_exchange(port: int, sni: str, trust: bytes) -> tuple[bytes, bytes] | None:
    """Through the gateway with SNI `sni`: the peer's certificate and the answer, or None
    while the gateway cannot pass the connection on (yet)."""
    context = ssl.create_default_context(cadata=ssl.DER_cert_to_PEM_cert(trust))

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
        return await asyncio.wait_for(exchange(), IO_TIMEOUT)
    except (OSError, ssl.SSLError, TimeoutError):
        return None


async def _tcp_exchange(port: int) -> bytes | None:
    async def exchange() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"ping\n")
            await writer.drain()
            return await reader.readline()
        finally:
            writer.close()

    try:
        return await asyncio.wait_for(exchange(), IO_TIMEOUT) or None
    except (OSError, TimeoutError):
        return None


async def test_envoy_passes_tls_through_by_sni_and_tcp_by_port(
    ca: CertificateAuthority,  # noqa: F811
    tmp_path: Path,
) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"db: " + await reader.readline())
        await writer.drain()
        writer.close()

    database = await asyncio.start_server(echo, "127.0.0.1", 0)
    database_port = database.sockets[0].getsockname()[1]
    tls_port, tcp_port = free_port(), free_port()
    async with (
        _tls_backend(tmp_path, "secure.example.com") as (secure_port, secure_der),
        _tls_backend(tmp_path, "other.example.com") as (other_port, other_der),
    ):
        every = [
            *_backend_objects("secure", secure_port, "https"),
            *_backend_objects("other", other_port, "https"),
            *_backend_objects("db", database_port, "tcp"),
            gateway("gw", [{**server(tls_port, "TLS", ["*.example.com"]), "bind": "127.0.0.1"},
                           {**server(tcp_port, "TCP", ["*"]), "bind": "127.0.0.1"}]),
            routes("pass", ["*.example.com"], tls=[
                to(SECURE, 443, sniHosts=["secure.example.com"]),
                to(OTHER, 443, sniHosts=["other.example.com"]),
            ]),
            routes("db", ["*"], tcp=[to(DATABASE, 5432)]),
        ]  # fmt: skip
        errors: list[str] = []
        snap = build_snapshot({object_key(o): o for o in every}, mesh=MeshConfig(), version=1,
                              errors=errors)  # fmt: skip
        assert errors == []
        try:
            async with gateway_envoy(ca, snap) as (control_plane, envoy):
                await eventually(lambda: synced(control_plane, "cds", "eds", "lds"), timeout=30)
                assert control_plane.xds_metrics.nacks == {}, control_plane.ads.status()
                await eventually(
                    lambda: envoy.stat_is("listener_manager.total_listeners_active", 2)
                )
                # Each SNI reaches its own backend, whose certificate the client verifies:
                # the gateway never terminated the client's TLS.
                for sni, der in (("secure.example.com", secure_der),
                                 ("other.example.com", other_der)):  # fmt: skip
                    peer, answer = await eventually(
                        lambda sni=sni, der=der: _tls_exchange(tls_port, sni, der), timeout=30
                    )
                    assert peer == der
                    assert answer == f"{sni}: hello\n".encode()
                # A name no rule routes: the gateway closes the connection.
                assert await _tls_exchange(tls_port, "nobody.example.com", secure_der) is None
                answer = await eventually(lambda: _tcp_exchange(tcp_port), timeout=30)
                assert answer == b"db: ping\n"
        finally:
            database.close()
            await database.wait_closed()
