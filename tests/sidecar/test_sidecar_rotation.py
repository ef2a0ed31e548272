"""Certificate renewal under steady traffic loses no request.

Both pods ask for 10-second certificates renewed at half their life (set the Istio way:
`proxyMetadata` in the pod's `proxy.istio.io/config`, which the injector turns into the
agent's SECRET_TTL / SIDEMESH_CERT_RENEW_FRACTION env). The client alternates an HTTP request
and a request over the TCP port (a fresh mTLS handshake between the sidecars every time), each
on a new connection, for a bounded number of rounds lasting well over two renewals.
"""

from __future__ import annotations

import json
import time

from mesh_kit import MeshKit, backend_url, client_and_backend
from sidecar_pod import Pod, summary

from sidemesh.api import names

SHORT_LIVED = {
    names.ANNOTATION_PROXY_CONFIG: json.dumps(
        {"proxyMetadata": {"SECRET_TTL": "10s", "SIDEMESH_CERT_RENEW_FRACTION": "0.5"}}
    )
}
ROUNDS = 400
INTERVAL = 0.04  # ≥ 16 s of traffic: three renewals expected, two required


def _serials(pod: Pod) -> set[str]:
    return {chain["serial_number"] for chain in pod.served_certificates()}


def test_certificate_renewal_under_steady_traffic_loses_no_request(kit: MeshKit) -> None:
    client, backend = client_and_backend(
        kit, client_annotations=SHORT_LIVED, backend_annotations=SHORT_LIVED
    )
    assert backend.agent_env["SECRET_TTL"] == "10s"
    first, first_client = _serials(backend), _serials(client)
    handshakes = _handshakes(backend)
    loop = client.start_app_get(
        backend_url("/steady"), backend_url("/steady", port=9000),
        count=ROUNDS, interval=INTERVAL, timeout=5,
    )  # fmt: skip
    seen = set(first)
    deadline = time.monotonic() + 180
    while loop.alive() and time.monotonic() < deadline:
        seen |= _serials(backend)
        time.sleep(0.5)
    result = summary(loop, timeout=30)

    assert (result["ok"], result["failed"]) == (2 * ROUNDS, 0), result["errors"]
    assert len(seen - first) >= 2, f"backend served {sorted(seen)}: fewer than two renewals"
    assert _serials(backend).isdisjoint(first)
    assert _serials(client).isdisjoint(first_client)
    # Every TCP-port request was a new mTLS handshake, so handshakes kept succeeding with
    # renewed certificates on both sides (the HTTP requests may reuse a pooled connection).
    assert _handshakes(backend) - handshakes >= ROUNDS


def _handshakes(pod: Pod) -> int:
    return pod.stats().get("listener.0.0.0.0_15006.ssl.handshake", 0)
