"""Gateway TLS passthrough and TCP servers (`xds.gateway_passthrough`): the chains they get,
Istio's rules for which `tls`/`tcp` rule serves them, and a real Envoy gateway forwarding a
client's TLS to the backend chosen by SNI (the client sees the backend's own certificate) and
raw TCP by port."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

from gateway_tcp_kit import (
    DATABASE,
    IO_TIMEOUT,
    OTHER,
    SECURE,
    backend_objects,
    checked_snapshot,
    database_backend,
    gateway_serving,
    routes,
    tls_backend,
    tls_exchange,
    to,
)
from test_envoy_acks import ca  # noqa: F401  (the fixture)
from test_gateway_envoy_acks import gateway_envoy
from test_gateway_listeners import (
    CERT,
    KEY,
    gateway,
    listeners_json,
    secret,
    server,
    snapshot,
)
from xds_testkit import eventually, free_port

from sidemesh.security.ca import CertificateAuthority


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


async def _tls_exchange(port: int, sni: str, trust: bytes) -> tuple[bytes, bytes] | None:
    """Through the gateway with SNI `sni`, trusting the backend's certificate (DER)."""
    return await tls_exchange(port, sni, ssl.DER_cert_to_PEM_cert(trust))


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
    tls_port, tcp_port = free_port(), free_port()
    async with (
        database_backend() as database_port,
        tls_backend(tmp_path, "secure.example.com") as (secure_port, secure_der),
        tls_backend(tmp_path, "other.example.com") as (other_port, other_der),
    ):
        every = [
            *backend_objects("secure", secure_port, "https"),
            *backend_objects("other", other_port, "https"),
            *backend_objects("db", database_port, "tcp"),
            gateway("gw", [{**server(tls_port, "TLS", ["*.example.com"]), "bind": "127.0.0.1"},
                           {**server(tcp_port, "TCP", ["*"]), "bind": "127.0.0.1"}]),
            routes("pass", ["*.example.com"], tls=[
                to(SECURE, 443, sniHosts=["secure.example.com"]),
                to(OTHER, 443, sniHosts=["other.example.com"]),
            ]),
            routes("db", ["*"], tcp=[to(DATABASE, 5432)]),
        ]  # fmt: skip
        snap = checked_snapshot(every)
        async with gateway_envoy(ca, snap) as (control_plane, envoy):
            await gateway_serving(control_plane, envoy, 2)
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
