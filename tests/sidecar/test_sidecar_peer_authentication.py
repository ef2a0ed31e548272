"""A workload PeerAuthentication with `portLevelMtls`, enforced by the backend's real Envoy:
STRICT on the http port refuses a caller without a sidecar (the node), PERMISSIVE on the
tcp-echo port still answers it, and the client's sidecar still gets in over mTLS."""

from __future__ import annotations

import http.client
import os

import yaml
from mesh_kit import MeshKit, backend_url, client_and_backend
from sidecar_kubelet import HTTP_PORT, NAMESPACE, TCP_PORT
from sidecar_netns import http_request, wait_until
from sidecar_pod import Pod

VIRTUAL_INBOUND = "listener.0.0.0.0_15006"


def _plaintext_from_the_node(kit: MeshKit, pod: Pod, port: int, path: str) -> str | None:
    """A caller without a sidecar straight to the pod IP: the pod that answered, or None."""
    try:
        reply = http_request(kit.node, pod.ip, port, path, timeout=3)
    except (OSError, http.client.HTTPException):
        return None
    assert reply.status == 200, reply
    answered: str = reply.json()["pod"]
    return answered


def _apply_policy(kit: MeshKit) -> None:
    """Written beside the registry files the control plane watches (atomically)."""
    policy = {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "backend-ports", "namespace": NAMESPACE},
        "spec": {
            "selector": {"matchLabels": {"app": "backend"}},
            "mtls": {"mode": "STRICT"},
            "portLevelMtls": {TCP_PORT: {"mode": "PERMISSIVE"}},
        },
    }
    path = kit.registry_dir / "peer-authentication.yaml"
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(yaml.safe_dump(policy))
    os.replace(temporary, path)


def test_port_level_mtls_strict_on_one_port_permissive_on_another(kit: MeshKit) -> None:
    client, backend = client_and_backend(kit)
    # No policy yet: PERMISSIVE, both ports answer plaintext.
    assert _plaintext_from_the_node(kit, backend, HTTP_PORT, "/before") == "backend-0"
    assert _plaintext_from_the_node(kit, backend, TCP_PORT, "/before") == "backend-0"

    _apply_policy(kit)
    wait_until(lambda: _plaintext_from_the_node(kit, backend, HTTP_PORT, "/strict") is None,
               timeout=30, what="STRICT on the http port refusing plaintext")  # fmt: skip
    # Refused by the policy at 15006 (no plaintext chain for that port), nothing else.
    refused = backend.stats().get(f"{VIRTUAL_INBOUND}.no_filter_chain_match", 0)
    assert _plaintext_from_the_node(kit, backend, HTTP_PORT, "/strict") is None
    assert backend.stats()[f"{VIRTUAL_INBOUND}.no_filter_chain_match"] > refused

    # The same listener update left the tcp-echo port PERMISSIVE.
    assert _plaintext_from_the_node(kit, backend, TCP_PORT, "/permissive") == "backend-0"

    # A sidecar caller is mTLS, so the STRICT port still lets it in.
    result = client.app_get(backend_url("/mtls-under-strict"))
    assert (result["ok"], result["failed"]) == (1, 0), result
    assert result["replies"][0]["xfcc"].endswith(f";URI={client.spiffe_id}")
