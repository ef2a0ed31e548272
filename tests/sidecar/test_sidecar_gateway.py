"""An ingress gateway for real: a pod injected with the `gateway` template runs the agent as a
router, takes its listeners from a Gateway (selected by `istio: ingressgateway`) and its routes
from the VirtualServices bound to it, and reaches the backend through the backend's sidecar
over mTLS (PeerAuthentication STRICT, and the backend sees the gateway's SPIFFE id).

The Gateway's servers: HTTP on port 80 (the Service maps it to the pod's 8080) for
hello.example.com, an httpsRedirect server on the same port for secure.example.com, and HTTPS
on 443 (→ 8443) for secure.example.com with `credentialName` naming a TLS Secret in the
gateway's namespace. Requests come from the node, i.e. from outside the mesh.
"""

from __future__ import annotations

import json
import ssl

from gateway_kit import GATEWAY_IDENTITY, SECURE_HOST, request, start_gateway_and_backend
from mesh_kit import MeshKit
from sidecar_netns import wait_until
from sidecar_pod import READY_TIMEOUT

from http_requests import Answer


def test_ingress_gateway_routes_http_and_https_to_the_backend_over_mtls(kit: MeshKit) -> None:
    _, gateway, cert_file = start_gateway_and_backend(kit)
    proxy = next(c for c in gateway.manifest["spec"]["containers"] if c["name"] == "istio-proxy")
    assert proxy["args"][:3] == ["agent", "proxy", "router"]
    assert not gateway.manifest["spec"].get("initContainers")  # nothing captured

    def answer(status: int, port: int, host: str, path: str = "/", *,
               tls: ssl.SSLContext | None = None) -> Answer:  # fmt: skip
        """The gateway's answer once it is `status` (config arrives when it arrives; a loaded
        machine may time a request out): the last answer or error is reported otherwise."""

        def check() -> Answer | None:
            found = request(kit.node, gateway.ip, port, host, path, tls=tls)
            return found if found.status == status else None

        found = wait_until(check, timeout=READY_TIMEOUT, what=f"{status} from {host}:{port}")
        assert found is not None
        return found

    # HTTP on the Gateway's port 80 is the pod's 8080 (the Service's targetPort).
    reply = answer(200, 8080, "hello.example.com", "/hello").json()
    assert reply["pod"] == "backend-0" and reply["path"] == "/hello"
    # STRICT mTLS at the backend, and the caller it saw is the gateway's identity.
    assert GATEWAY_IDENTITY in (reply["xfcc"] or ""), reply

    # A host no VirtualService binds to this Gateway: Envoy's 404, nothing forwarded.
    answer(404, 8080, "other.example.com")

    # httpsRedirect: plain HTTP for the secure host is sent to https.
    redirect = answer(301, 8080, SECURE_HOST, "/account")
    assert redirect.headers["location"] == f"https://{SECURE_HOST}/account"

    # HTTPS with the Secret's certificate, verified by the client against it.
    context = ssl.create_default_context(cafile=str(cert_file))
    secure = answer(200, 8443, SECURE_HOST, "/account", tls=context).json()
    assert secure["pod"] == "backend-0"
    assert GATEWAY_IDENTITY in (secure["xfcc"] or "")

    # The gateway proxy has no capture listeners: its Gateway's and the bootstrap's only.
    listeners = json.loads(gateway.admin("/listeners?format=json").body)
    names = sorted(s["name"] for s in listeners["listener_statuses"])
    assert names == ["0.0.0.0_8080", "0.0.0.0_8443", "health", "prometheus"], names

    # The agent introduced itself as a router (Istio's node type for gateways).
    nodes = sorted(row["proxy"].split("~")[0] for row in kit.proxy_status())
    assert nodes == ["router", "sidecar"], nodes
