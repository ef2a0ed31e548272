"""Capture for real: the app's outbound call goes through its sidecar's 15001 and, over
mTLS, through the server sidecar's 15006; a caller without a sidecar lands on 15006 too and
is let in as plaintext (PERMISSIVE) until a STRICT PeerAuthentication shuts it out."""

from __future__ import annotations

import http.client

from mesh_kit import BACKEND, MeshKit, backend_url, client_and_backend
from sidecar_kubelet import HTTP_PORT, TCP_PORT, container
from sidecar_netns import http_request, wait_until
from sidecar_pod import Pod

OUTBOUND = "cluster.outbound|80||backend.demo.svc.cluster.local"
OUTBOUND_TCP = "cluster.outbound|9000||backend.demo.svc.cluster.local"
VIRTUAL_INBOUND = "listener.0.0.0.0_15006"


def _stat(pod: Pod, name: str) -> int:
    return pod.stats().get(name, 0)


def _outbound_listener_connections(stats: dict[str, int]) -> int:
    """Connections the client's Envoy accepted on outbound listeners: `virtualOutbound`
    (15001) or the per-service listener it hands a connection to, whichever the control
    plane's layout counts them on. The app dialled the VIP: only capture brings it here."""
    inbound_or_own = ("listener.0.0.0.0_15006.", "listener.0.0.0.0_15021.",
                      "listener.0.0.0.0_15090.", "listener.admin.")  # fmt: skip
    return sum(
        value
        for name, value in stats.items()
        if name.startswith("listener.")
        and name.endswith(".downstream_cx_total")
        and not name.startswith(inbound_or_own)
    )


def test_app_calls_a_service_through_both_sidecars_over_mtls(kit: MeshKit) -> None:
    client, backend = client_and_backend(kit)

    result = client.app_get(
        backend_url("/by-name"), f"http://{BACKEND.vip}/by-vip", backend_url("/tcp", port=9000)
    )
    assert (result["ok"], result["failed"]) == (3, 0), result
    by_name, by_vip, tcp = result["replies"]
    for reply, path in ((by_name, "/by-name"), (by_vip, "/by-vip")):
        assert (reply["pod"], reply["port"], reply["path"]) == ("backend-0", HTTP_PORT, path)
        # Only the server sidecar can have written this: it saw the client's certificate.
        assert reply["xfcc"].startswith(f"By={backend.spiffe_id};Hash=")
        assert reply["xfcc"].endswith(f";URI={client.spiffe_id}")
    assert (tcp["pod"], tcp["port"], tcp["path"]) == ("backend-0", TCP_PORT, "/tcp")
    assert tcp["xfcc"] is None  # opaque TCP: no HTTP filter in either sidecar

    client_stats, backend_stats = client.stats(), backend.stats()
    assert client_stats[f"{OUTBOUND}.upstream_rq_total"] >= 2
    assert _outbound_listener_connections(client_stats) >= 3
    assert client_stats[f"{OUTBOUND_TCP}.upstream_cx_total"] >= 1
    assert backend_stats[f"{VIRTUAL_INBOUND}.downstream_cx_total"] >= 2
    assert backend_stats[f"{VIRTUAL_INBOUND}.ssl.handshake"] >= 2
    assert backend_stats[f"cluster.inbound|{HTTP_PORT}||.upstream_rq_total"] >= 2
    assert backend_stats[f"cluster.inbound|{TCP_PORT}||.upstream_cx_total"] >= 1


def _plaintext_from_the_node(kit: MeshKit, backend: Pod, path: str) -> dict[str, object] | None:
    """A caller without a sidecar (the node) straight to the pod IP; None when refused."""
    try:
        reply = http_request(kit.node, backend.ip, HTTP_PORT, path, timeout=3)
    except (OSError, http.client.HTTPException):
        return None
    assert reply.status == 200, reply
    body: dict[str, object] = reply.json()
    return body


def test_inbound_plaintext_is_captured_permitted_then_refused_under_strict(kit: MeshKit) -> None:
    client, backend = client_and_backend(kit)
    connections = _stat(backend, f"{VIRTUAL_INBOUND}.downstream_cx_total")

    reply = _plaintext_from_the_node(kit, backend, "/plaintext")
    assert reply is not None, "PERMISSIVE refused a plaintext caller"
    assert (reply["pod"], reply["path"], reply["xfcc"]) == ("backend-0", "/plaintext", None)
    assert _stat(backend, f"{VIRTUAL_INBOUND}.downstream_cx_total") > connections  # via 15006

    kit.set_peer_authentication("STRICT")
    wait_until(lambda: _plaintext_from_the_node(kit, backend, "/strict") is None,
               timeout=30, what="STRICT refusing plaintext")  # fmt: skip
    # Refused by policy at 15006 (no plaintext filter chain), not by anything else.
    refused = _stat(backend, f"{VIRTUAL_INBOUND}.no_filter_chain_match")
    assert _plaintext_from_the_node(kit, backend, "/strict") is None
    assert _stat(backend, f"{VIRTUAL_INBOUND}.no_filter_chain_match") > refused

    # Sidecar to sidecar is mTLS, so it still works.
    result = client.app_get(backend_url("/mtls-under-strict"))
    assert (result["ok"], result["failed"]) == (1, 0), result
    assert result["replies"][0]["xfcc"].endswith(f";URI={client.spiffe_id}")

    # kubelet's probe, rewritten to the agent, still reaches the app: the agent probes from
    # the capture-exempt 127.0.0.6, not as a plaintext client of its own 15006.
    probe = container(backend.manifest, "app")["readinessProbe"]["httpGet"]
    reply_probe = http_request(kit.node, backend.ip, probe["port"], probe["path"])
    assert (reply_probe.status, reply_probe.body) == (200, "HTTP 200\n")
