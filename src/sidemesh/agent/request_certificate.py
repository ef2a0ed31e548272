"""`python -m sidemesh.agent.request_certificate`: one certificate request, then exit.

Run by the agent (`issuing.IssuerProcess`) so that the long-running agent never loads grpcio
or cryptography. Reads the request as JSON on stdin, prints the certificate and its key as
JSON on stdout, or `{"error": …, "kind": "ca" | "certificate"}` with exit code 1.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

# Nothing here forks after gRPC starts; its fork handlers would only add noise.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from sidemesh.agent.ca_client import CaClient
from sidemesh.agent.issuing_protocol import CaError, CertificateError


def _workload(value: object) -> dict[str, str] | None:
    if not isinstance(value, dict):
        return None
    return {str(k): str(v) for k, v in value.items()}


def main() -> int:
    request = json.loads(sys.stdin.read())
    client = CaClient(
        address=str(request["address"]),
        server_name=str(request["server_name"]),
        token_path=Path(request["token_path"]),
        cluster_id=str(request["cluster_id"]),
        timeout=float(request["timeout"]),
        workload=_workload(request.get("workload")),
    )
    try:
        certificate = asyncio.run(
            client.issue(
                spiffe_id=str(request["spiffe_id"]),
                ttl_seconds=int(request["ttl_seconds"]),
                root_pem=str(request["root_pem"]).encode("ascii"),
            )
        )
    except CertificateError as exc:
        print(json.dumps({"error": str(exc), "kind": "certificate"}))
        return 1
    except CaError as exc:
        print(json.dumps({"error": str(exc), "kind": "ca"}))
        return 1
    print(json.dumps(certificate.to_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
