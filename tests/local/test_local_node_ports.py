"""The node's relays: bytes pass both ways unchanged, a half-close reaches the other side, and
a relay with nowhere to go closes the connection. Both ends are in this test's own network
namespace (the relay still steps into it with setns, so this needs root)."""

from __future__ import annotations

import asyncio
import os

import pytest

from sidemesh.local.node_ports import Namespace, Relay, RelayServer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="setns needs root")


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    data = await reader.read()  # until the client's half-close
    writer.write(data.upper())
    await writer.drain()
    writer.close()


async def _relay_to(target: tuple[str, int] | None) -> tuple[RelayServer, int]:
    here = Namespace.current()
    relay = RelayServer(
        Relay(
            name="test",
            listen_in=here,
            listen=("127.0.0.1", 0),
            dial_in=here,
            target=lambda: target,
        )
    )
    await relay.start()
    assert relay.server is not None
    port = relay.server.sockets[0].getsockname()[1]
    return relay, int(port)


async def test_bytes_and_the_half_close_pass_through() -> None:
    upstream = await asyncio.start_server(_echo, "127.0.0.1", 0)
    upstream_port = upstream.sockets[0].getsockname()[1]
    relay, port = await _relay_to(("127.0.0.1", upstream_port))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello through the node")
        writer.write_eof()
        assert await reader.read() == b"HELLO THROUGH THE NODE"
        writer.close()
    finally:
        await relay.stop()
        upstream.close()


async def test_nowhere_to_go_closes_the_connection() -> None:
    relay, port = await _relay_to(None)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await reader.read() == b""
        writer.close()
    finally:
        await relay.stop()
