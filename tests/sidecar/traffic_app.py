"""The app of the traffic-policy tests, run inside pod network namespaces as a non-proxy uid
(so capture applies to it, as to a real app).

traffic_app.py serve --name POD --port 8080 [--port ...]
    HTTP/1.1 keep-alive. Answers JSON {"pod", "path"}; `/slow?seconds=S` first sleeps S
    seconds; paths under `/flaky` are answered 503 and 200 in turn (a counter per process:
    exactly every other request fails, so retries have something certain to recover from).
traffic_app.py tally URL --count N [--concurrency C] [--header NAME:VALUE ...]
    N GETs spread over C keep-alive connections, started together; prints ONE JSON line:
    {"status": {code: count}, "pods": {pod: count (of 200s)}, "errors": [first 5]}.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import sys
import threading
import urllib.parse
from collections import Counter
from typing import Any


class _Flaky:
    calls = 0


async def _serve_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str
) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            target = [*lines[0].split(" "), ""][1]
            length = 0
            for line in lines[1:]:
                key, _, value = line.partition(":")
                if key.strip().lower() == "content-length":
                    length = int(value.strip())
            if length:
                await reader.readexactly(length)
            url = urllib.parse.urlsplit(target)
            status = b"200 OK"
            if url.path == "/slow":
                await asyncio.sleep(float(urllib.parse.parse_qs(url.query)["seconds"][0]))
            if url.path.startswith("/flaky"):
                _Flaky.calls += 1
                if _Flaky.calls % 2:
                    status = b"503 Service Unavailable"
            body = json.dumps({"pod": name, "path": url.path}).encode()
            writer.write(b"HTTP/1.1 %s\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (status, len(body), body))  # fmt: skip
            await writer.drain()
    finally:
        writer.close()


async def serve(name: str, ports: list[int]) -> None:
    for port in ports:
        await asyncio.start_server(
            lambda r, w: _serve_connection(r, w, name), "0.0.0.0", port, backlog=512
        )
    print("ready", flush=True)
    await asyncio.Event().wait()


def tally(url: str, count: int, concurrency: int, headers: dict[str, str]) -> dict[str, Any]:
    parts = urllib.parse.urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    statuses: Counter[str] = Counter()
    pods: Counter[str] = Counter()
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(concurrency)

    def worker(requests: int) -> None:
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=30)
        start.wait()
        for _ in range(requests):
            try:
                connection.request("GET", target, headers=headers)
                response = connection.getresponse()
                body = response.read()
                pod = json.loads(body)["pod"] if response.status == 200 else None
                outcome = str(response.status)
            except (OSError, ValueError, KeyError, http.client.HTTPException) as exc:
                connection.close()
                outcome, pod = "error", None
                with lock:
                    if len(errors) < 5:
                        errors.append(f"{type(exc).__name__}: {exc}")
            with lock:
                statuses[outcome] += 1
                if pod is not None:
                    pods[pod] += 1
        connection.close()

    shares = [count // concurrency + (1 if i < count % concurrency else 0)
              for i in range(concurrency)]  # fmt: skip
    threads = [threading.Thread(target=worker, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"status": dict(statuses), "pods": dict(pods), "errors": errors}


def main() -> int:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    server = commands.add_parser("serve")
    server.add_argument("--name", required=True)
    server.add_argument("--port", type=int, action="append", required=True)
    client = commands.add_parser("tally")
    client.add_argument("url")
    client.add_argument("--count", type=int, default=1)
    client.add_argument("--concurrency", type=int, default=1)
    client.add_argument("--header", action="append", default=[])
    arguments = parser.parse_args()
    if arguments.command == "serve":
        asyncio.run(serve(arguments.name, arguments.port))
        return 0
    headers = dict(h.split(":", 1) for h in arguments.header)
    result = tally(arguments.url, arguments.count, arguments.concurrency, headers)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
