"""The status port's HTTP/1.1 server (`server`): keep-alive, pipelining, HEAD, close."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sidemesh.agent.server import HttpServer


async def _echo(scope: Any, receive: Any, send: Any) -> None:
    request = await receive()
    body = f"{scope['method']} {scope['path']} {len(request['body'])} {scope['client'][0]}"
    status = 404 if scope["path"] == "/missing" else 200
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body.encode()})


@pytest.fixture
async def port() -> AsyncIterator[int]:
    sock = socket.create_server(("127.0.0.1", 0))
    server = HttpServer(_echo)
    await server.start(sock)
    try:
        yield sock.getsockname()[1]
    finally:
        await server.stop()


async def _exchange(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()


async def test_pipelined_keep_alive_requests_are_answered_in_order(port: int) -> None:
    raw = (
        b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n"
        b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /missing HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    )
    answer = await _exchange(port, raw)
    assert answer.count(b"HTTP/1.1 ") == 3
    assert (
        answer.index(b"GET /a 0 127.0.0.1")
        < answer.index(b"POST /b 3")
        < answer.index(b"HTTP/1.1 404")
    )
    assert answer.endswith(b"GET /missing 0 127.0.0.1")  # and then closed, as asked


async def test_head_has_headers_and_no_body(port: int) -> None:
    answer = await _exchange(port, b"HEAD /h HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"content-length: 19" in head
    assert body == b""


async def test_http_1_0_closes_after_the_answer(port: int) -> None:
    answer = await _exchange(port, b"GET /old HTTP/1.0\r\n\r\n")
    assert b"connection: close" in answer and answer.endswith(b"GET /old 0 127.0.0.1")


async def test_garbage_gets_400_and_a_closed_connection(port: int) -> None:
    assert (await _exchange(port, b"NOT HTTP AT ALL\r\n\r\n")).startswith(b"HTTP/1.1 400")
