"""Inbound traffic to a port no Service declares goes through Envoy's
InboundPassthroughCluster to the app, once.

Envoy (uid 1337) dials the original destination, its own pod IP, over loopback. Unless that
connection leaves from 127.0.0.6 (which capture's `-o lo -s 127.0.0.6 -j RETURN` lets
through, and which Istio binds the passthrough cluster to), capture's `-o lo ! -d 127.0.0.1
--uid-owner 1337 -j ISTIO_IN_REDIRECT` sends it back into 15006 and it loops: before the
control plane bound that source, one request became about a thousand connections here.
"""

from __future__ import annotations

from mesh_kit import MeshKit, client_and_backend
from sidecar_kubelet import HTTP_PORT
from sidecar_netns import http_request

INBOUND_CONNECTIONS = "listener.0.0.0.0_15006.downstream_cx_total"


def test_a_port_no_service_declares_passes_through_to_the_app_once(kit: MeshKit) -> None:
    client, _ = client_and_backend(kit)  # client-0 backs no Service: all its ports pass through
    connections = client.stats().get(INBOUND_CONNECTIONS, 0)
    reply = http_request(kit.node, client.ip, HTTP_PORT, "/passthrough", timeout=5)
    assert reply.status == 200 and reply.json()["path"] == "/passthrough"
    assert reply.json()["pod"] == "client-0"
    assert client.stats().get(INBOUND_CONNECTIONS, 0) - connections == 1
