"""The agent's tiny HTTP client against raw local servers."""

from __future__ import annotations

import time

import pytest
from local_servers import HttpBehaviour, closed_port, http_server

from sidemesh.agent import http


async def test_content_length_response_and_request_headers() -> None:
    behaviour = HttpBehaviour(status=201, body=b"hello", headers=[("X-Reply", "1")])
    async with http_server(behaviour) as port:
        response = await http.fetch("127.0.0.1", port, "/p?q=1", headers=[("Accept", "a/b")])
    assert (response.status, response.body, response.headers["x-reply"]) == (201, b"hello", "1")
    request = behaviour.requests[0]
    assert (request.method, request.path) == ("GET", "/p?q=1")
    assert request.headers["host"] == f"127.0.0.1:{port}"
    assert request.headers["accept"] == "a/b"
    assert request.headers["connection"] == "close"


async def test_chunked_response() -> None:
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    async with http_server(HttpBehaviour(raw=raw)) as port:
        response = await http.fetch("127.0.0.1", port)
    assert response.body == b"abcde"


async def test_body_delimited_by_close() -> None:
    raw = b"HTTP/1.0 200 OK\r\n\r\nuntil the end"
    async with http_server(HttpBehaviour(raw=raw)) as port:
        response = await http.fetch("127.0.0.1", port)
    assert response.body == b"until the end"


async def test_body_is_capped() -> None:
    async with http_server(HttpBehaviour(body=b"x" * 5000)) as port:
        response = await http.fetch("127.0.0.1", port, max_body=100)
    assert (response.status, len(response.body), response.truncated) == (200, 100, True)


async def test_post_sends_a_length() -> None:
    behaviour = HttpBehaviour()
    async with http_server(behaviour) as port:
        await http.fetch("127.0.0.1", port, "/drain", method="POST")
    assert behaviour.requests[0].headers["content-length"] == "0"


@pytest.mark.parametrize("raw", [b"", b"HTTP/1.1 200 OK\r\nContent-Le", b"not http at all\r\n\r\n"])
async def test_broken_responses_raise(raw: bytes) -> None:
    async with http_server(HttpBehaviour(raw=raw)) as port:
        with pytest.raises(http.HttpError):
            await http.fetch("127.0.0.1", port)


async def test_refused_and_timeout_raise() -> None:
    with pytest.raises(http.HttpError):
        await http.fetch("127.0.0.1", closed_port())
    async with http_server(HttpBehaviour(delay=5)) as port:
        started = time.monotonic()
        with pytest.raises(http.HttpError, match=r"no response within 0\.2s"):
            await http.fetch("127.0.0.1", port, timeout=0.2)
        assert time.monotonic() - started < 3


async def test_header_injection_is_refused() -> None:
    with pytest.raises(http.HttpError, match="line break"):
        await http.fetch("127.0.0.1", 1, headers=[("X", "a\r\nEvil: 1")])


async def test_fetch_url() -> None:
    async with http_server(HttpBehaviour(body=b"ready")) as port:
        response = await http.fetch_url(f"http://127.0.0.1:{port}/healthz/ready?x=1")
    assert response.text == "ready"
    with pytest.raises(http.HttpError, match="not an http:// URL"):
        await http.fetch_url("https://example.com/")
