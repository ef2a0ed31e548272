"""Shared helpers for the local runtime's tests: a real HTTPS webhook on 127.0.0.1 (the real
engine behind `sidemesh.webhook.admission.review`), and state builders."""

from __future__ import annotations

import http.server
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sidemesh.inject.engine import Injector
from sidemesh.local.controlplane import serving_names
from sidemesh.local.model import NetworkRecord, State
from sidemesh.local.pki import LocalPki
from sidemesh.webhook.admission import review


def empty_state() -> State:
    return State(network=NetworkRecord(prefix="sm-test", node_netns="sm-test-node"))


@dataclass
class Webhook:
    port: int
    root_pem: str
    requests: list[bytes] = field(default_factory=list)

    def connect(self, host: str, port: int, timeout: float) -> socket.socket:
        """Ignore the service address: the test server listens on loopback."""
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)


@contextmanager
def running_webhook(
    revision: str, answer: Callable[[bytes], bytes] | None = None
) -> Iterator[Webhook]:
    """A webhook serving `revision` over HTTPS with a certificate from a LocalPki."""
    injector = Injector.from_files(revision=revision)
    with tempfile.TemporaryDirectory() as directory:
        pki = LocalPki(Path(directory))
        cert, key = pki.serving_certificate(serving_names(revision))
        (Path(directory) / "tls.crt").write_text(cert)
        (Path(directory) / "tls.key").write_text(key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(Path(directory) / "tls.crt", Path(directory) / "tls.key")
        seen: list[bytes] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                seen.append(body)
                data = answer(body) if answer else review(body, injector).body
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield Webhook(port=server.server_address[1], root_pem=pki.root_pem(), requests=seen)
        finally:
            server.shutdown()
            server.server_close()
