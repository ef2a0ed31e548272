"""An xDS-enabled gRPC server (gRFC A36), run by `proxyless_grpc_kit.serve_through_xds` in its
own process: `python proxyless_grpc_server.py NAME PORT`, with GRPC_XDS_BOOTSTRAP set. It asks
the discovery for its listener and serves with xDS server credentials (mTLS when the listener
says so); it answers `NAME` and the caller's SPIFFE identity, if the caller showed one. Runs
until SIGTERM."""

from __future__ import annotations

import signal
import sys
import threading
from concurrent import futures
from typing import Any

import grpc
from cryptography import x509


def who_answer(name: str, context: Any) -> bytes:
    """`name`, and over mTLS also the SPIFFE identity the caller's certificate proved."""
    pem = (context.auth_context() or {}).get("x509_pem_cert")
    if not pem:
        return name.encode()
    certificate = x509.load_pem_x509_certificate(pem[0])
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    uris = names.value.get_values_for_type(x509.UniformResourceIdentifier)
    return f"{name} {' '.join(uris)}".encode()


def main() -> int:
    name, port = sys.argv[1], int(sys.argv[2])

    def answer(request: bytes, context: Any) -> bytes:
        return who_answer(name, context)

    handler = grpc.method_handlers_generic_handler(
        "sidemesh.test.Who", {"Am": grpc.unary_unary_rpc_method_handler(answer)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), xds=True)
    server.add_generic_rpc_handlers((handler,))
    server.add_secure_port(
        f"0.0.0.0:{port}", grpc.xds_server_credentials(grpc.insecure_server_credentials())
    )
    server.start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    print("started", flush=True)
    stopped.wait()
    server.stop(None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
