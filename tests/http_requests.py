"""One HTTP/1.1 request written by hand, for tests that must choose what a client library would
not let them: the Host header apart from the address dialled (a gateway's virtual hosts, a
NodePort), and over TLS the SNI name. The caller decides which network namespace it runs in."""

from __future__ import annotations

import json
import socket
import ssl
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # names lowercased
    body: str

    def json(self) -> dict[str, Any]:
        reply: dict[str, Any] = json.loads(self.body)
        return reply


def get(address: str, port: int, host: str, path: str = "/", *,
        tls: ssl.SSLContext | None = None, timeout: float = 5.0) -> Answer:  # fmt: skip
    """`GET path` to address:port with `Host: host` (and, given `tls`, SNI `host`)."""
    with socket.create_connection((address, port), timeout=timeout) as raw:
        stream = tls.wrap_socket(raw, server_hostname=host) if tls else raw
        stream.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                       .encode())  # fmt: skip
        data = b""
        while chunk := stream.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode(errors="replace").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
    return Answer(int(status_line.split()[1]), headers, body.decode(errors="replace"))
