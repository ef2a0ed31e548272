"""The "application" of the sidecar tests: run inside a pod's network namespace as a non-proxy
uid, so that its traffic is captured exactly like a real app's.

sidecar_app.py serve --name POD --port 8080 [--port 9090 ...]
    HTTP/1.1 (keep-alive) on 0.0.0.0:PORT. Every request is answered with JSON
    {"pod", "port", "path", "xfcc"}; `/slow?seconds=S` first sleeps S seconds and logs
    "slow request started" to stderr when it arrives.
sidecar_app.py get URL [URL ...] [--count N] [--interval S] [--timeout S]
    N rounds over the URLs, each request on a new connection; prints ONE JSON line:
    {"ok", "failed", "errors" (first 10), "replies" (first 10 bodies), "xfcc" (distinct)}.
sidecar_app.py load --host H --port P --rate R --duration S [--connections C] [--warmup S]
                   [--raw]
    Open-loop GETs at R requests/s over C keep-alive connections; each latency is measured
    from the moment the request was due (so a stalled client cannot hide queueing). Prints
    ONE JSON line with the latency percentiles in ms, the count and the failures (and with
    --raw every measured latency).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import sys
import time
import urllib.parse
from collections.abc import Callable, Coroutine
from typing import Any

_REQUEST_LIMIT = 64 * 1024


async def _serve_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str, port: int
) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = [*lines[0].split(" "), "", "", ""][:3]
            headers = {}
            for line in lines[1:]:
                key, sep, value = line.partition(":")
                if sep:
                    headers[key.strip().lower()] = value.strip()
            length = int(headers.get("content-length") or 0)
            if length:
                await reader.readexactly(length)
            url = urllib.parse.urlsplit(target)
            if url.path == "/slow":
                seconds = float(urllib.parse.parse_qs(url.query).get("seconds", ["1"])[0])
                print(f"slow request started ({seconds}s)", file=sys.stderr, flush=True)
                await asyncio.sleep(seconds)
            body = json.dumps(
                {"pod": name, "port": port, "path": url.path, "method": method,
                 "xfcc": headers.get("x-forwarded-client-cert")}
            ).encode()  # fmt: skip
            close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n%s\r\n%s"
                % (len(body), b"Connection: close\r\n" if close else b"", body)
            )
            await writer.drain()
            if close:
                return
    finally:
        writer.close()


async def serve(name: str, ports: list[int]) -> None:
    servers = []
    for port in ports:

        async def handle(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int = port
        ) -> None:
            await _serve_connection(reader, writer, name, port)

        servers.append(
            await asyncio.start_server(handle, "0.0.0.0", port, limit=_REQUEST_LIMIT, backlog=512)
        )
    print("ready", flush=True)
    await asyncio.Event().wait()


def get(urls: list[str], count: int, interval: float, timeout: float) -> dict[str, Any]:
    ok = failed = 0
    errors: list[str] = []
    replies: list[Any] = []
    xfcc: list[str] = []
    for round_number in range(count):
        for url in urls:
            parts = urllib.parse.urlsplit(url)
            connection = http.client.HTTPConnection(
                parts.hostname or "", parts.port or 80, timeout=timeout
            )
            try:
                target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                connection.request("GET", target, headers={"Connection": "close"})
                response = connection.getresponse()
                body = response.read()
                if response.status != 200:
                    raise OSError(f"HTTP {response.status}: {body[:200]!r}")
                reply = json.loads(body)
            except (OSError, ValueError, http.client.HTTPException) as exc:
                failed += 1
                if len(errors) < 10:
                    errors.append(f"round {round_number} {url}: {type(exc).__name__}: {exc}")
            else:
                ok += 1
                if len(replies) < 10:
                    replies.append(reply)
                if reply.get("xfcc") and reply["xfcc"] not in xfcc:
                    xfcc.append(reply["xfcc"])
            finally:
                connection.close()
        if interval and round_number + 1 < count:
            time.sleep(interval)
    return {"ok": ok, "failed": failed, "errors": errors, "replies": replies, "xfcc": xfcc}


async def _load_connection(
    host: str, port: int, queue: asyncio.Queue[float | None], latencies: list[float],
    failures: list[str], timeout: float,
) -> None:  # fmt: skip
    request = f"GET /load HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while True:
        due = await queue.get()
        if due is None:
            break
        try:
            if writer is None:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), timeout
                )
            assert reader is not None and writer is not None
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await asyncio.wait_for(reader.readexactly(length), timeout)
            if not head.startswith(b"HTTP/1.1 200"):
                raise OSError(head.split(b"\r\n")[0].decode(errors="replace"))
            latencies.append(time.perf_counter() - due)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
            if writer is not None:
                writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


async def load(
    host: str, port: int, rate: float, duration: float, connections: int, warmup: float,
    raw: bool,
) -> dict[str, Any]:  # fmt: skip
    queue: asyncio.Queue[float | None] = asyncio.Queue()
    latencies: list[float] = []
    failures: list[str] = []
    workers = [
        asyncio.create_task(_load_connection(host, port, queue, latencies, failures, 5.0))
        for _ in range(connections)
    ]
    period = 1.0 / rate
    total = int((warmup + duration) * rate)
    warm = int(warmup * rate)
    start = time.perf_counter() + 0.05
    measured_from = 0
    late = 0
    for index in range(total):
        due = start + index * period
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -period:
            late += 1
        if index == warm:
            measured_from = len(latencies)
            failures.clear()
        queue.put_nowait(due)
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.wait_for(asyncio.gather(*workers), timeout=30)
    measured = sorted(latencies[measured_from:])
    extra = {"latencies_ms": [round(value * 1000, 4) for value in measured]} if raw else {}
    return {
        **extra,
        "requests": len(measured),
        "failures": len(failures),
        "failure_examples": failures[:3],
        "late_dispatches": late,
        "p50_ms": _percentile(measured, 0.50) * 1000,
        "p90_ms": _percentile(measured, 0.90) * 1000,
        "p99_ms": _percentile(measured, 0.99) * 1000,
        "mean_ms": (sum(measured) / len(measured) * 1000) if measured else float("nan"),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    server = commands.add_parser("serve")
    server.add_argument("--name", required=True)
    server.add_argument("--port", type=int, action="append", required=True)
    client = commands.add_parser("get")
    client.add_argument("urls", nargs="+")
    client.add_argument("--count", type=int, default=1)
    client.add_argument("--interval", type=float, default=0.0)
    client.add_argument("--timeout", type=float, default=5.0)
    loader = commands.add_parser("load")
    loader.add_argument("--host", required=True)
    loader.add_argument("--port", type=int, required=True)
    loader.add_argument("--rate", type=float, default=1000.0)
    loader.add_argument("--duration", type=float, default=10.0)
    loader.add_argument("--warmup", type=float, default=1.0)
    loader.add_argument("--connections", type=int, default=16)
    loader.add_argument("--raw", action="store_true", help="also print every latency (ms)")
    arguments = parser.parse_args()
    run: Callable[[Coroutine[Any, Any, Any]], Any] = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        run = uvloop.run
    if arguments.command == "serve":
        run(serve(arguments.name, arguments.port))
        return 0
    if arguments.command == "get":
        result = get(arguments.urls, arguments.count, arguments.interval, arguments.timeout)
    else:
        result = run(
            load(arguments.host, arguments.port, arguments.rate, arguments.duration,
                 arguments.connections, arguments.warmup, arguments.raw)
        )  # fmt: skip
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
