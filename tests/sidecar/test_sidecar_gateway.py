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

import base64
import json
import os
import ssl
from pathlib import Path
from typing import Any

import yaml
from mesh_kit import BACKEND, MeshKit, ServiceDef, self_signed_certificate
from sidecar_kubelet import NAMESPACE
from sidecar_netns import in_netns, wait_until
from sidecar_pod import READY_TIMEOUT

import http_requests
from http_requests import Answer

INGRESS = ServiceDef(
    name="istio-ingressgateway", vip="10.96.0.20", app="istio-ingressgateway",
    ports=(("http2", 80, 8080), ("https", 443, 8443)),
)  # fmt: skip
GATEWAY_IDENTITY = f"spiffe://cluster.local/ns/{NAMESPACE}/sa/istio-ingressgateway"
SECURE_HOST = "secure.example.com"


def gateway_pod() -> dict[str, Any]:
    """How Istio users deploy a gateway: only `istio-proxy`, image auto, template gateway."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "ingress-0", "namespace": NAMESPACE,
                     "labels": {"app": "istio-ingressgateway", "istio": "ingressgateway"},
                     "annotations": {"inject.istio.io/templates": "gateway"}},
        "spec": {"serviceAccountName": "istio-ingressgateway",
                 "containers": [{"name": "istio-proxy", "image": "auto",
                                 "ports": [{"containerPort": 8080, "name": "http2"},
                                           {"containerPort": 8443, "name": "https"}]}]},
    }  # fmt: skip


def mesh_config(certificate: bytes, key: bytes) -> list[dict[str, Any]]:
    def route_to_backend() -> list[dict[str, Any]]:
        return [{"route": [{"destination": {"host": BACKEND.hostname, "port": {"number": 80}}}]}]

    return [
        {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
         "metadata": {"name": "ingress", "namespace": NAMESPACE},
         "spec": {"selector": {"istio": "ingressgateway"}, "servers": [
             {"port": {"number": 80, "name": "http", "protocol": "HTTP"},
              "hosts": ["hello.example.com"]},
             {"port": {"number": 80, "name": "http-redirect", "protocol": "HTTP"},
              "hosts": [SECURE_HOST], "tls": {"httpsRedirect": True}},
             {"port": {"number": 443, "name": "https", "protocol": "HTTPS"},
              "hosts": [SECURE_HOST],
              "tls": {"mode": "SIMPLE", "credentialName": "secure-cert"}},
         ]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "hello", "namespace": NAMESPACE},
         "spec": {"hosts": ["hello.example.com"], "gateways": ["ingress"],
                  "http": route_to_backend()}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "secure", "namespace": NAMESPACE},
         "spec": {"hosts": [SECURE_HOST], "gateways": [f"{NAMESPACE}/ingress"],
                  "http": route_to_backend()}},
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
         "metadata": {"name": "secure-cert", "namespace": NAMESPACE},
         "data": {"tls.crt": base64.b64encode(certificate).decode(),
                  "tls.key": base64.b64encode(key).decode()}},
        {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
         "metadata": {"name": "default", "namespace": NAMESPACE},
         "spec": {"mtls": {"mode": "STRICT"}}},
    ]  # fmt: skip


def request(netns: str, address: str, port: int, host: str, path: str = "/", *,
            tls: ssl.SSLContext | None = None) -> Answer:  # fmt: skip
    """One request from inside `netns` with this Host (and, over TLS, this SNI)."""
    return in_netns(netns, lambda: http_requests.get(address, port, host, path, tls=tls,
                                                     timeout=10), timeout=20)  # fmt: skip


def _write(path: Path, documents: list[dict[str, Any]]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")  # not *.yaml: the registry never half-reads
    temporary.write_text(yaml.safe_dump_all(documents))
    os.replace(temporary, path)


def test_ingress_gateway_routes_http_and_https_to_the_backend_over_mtls(kit: MeshKit) -> None:
    kit.add_service(BACKEND)
    kit.add_service(INGRESS)
    backend = kit.add_pod("backend-0", app="backend", service_account="backend")
    gateway = kit.add_pod("ingress-0", app="istio-ingressgateway",
                          service_account="istio-ingressgateway",
                          manifest=gateway_pod())  # fmt: skip
    proxy = next(c for c in gateway.manifest["spec"]["containers"] if c["name"] == "istio-proxy")
    assert proxy["args"][:3] == ["agent", "proxy", "router"]
    assert not gateway.manifest["spec"].get("initContainers")  # nothing captured

    certificates = kit.workdir / "secure"
    certificates.mkdir()
    cert_file, key_file = self_signed_certificate(certificates, SECURE_HOST)
    kit.registry_dir.mkdir(exist_ok=True)
    _write(kit.registry_dir / "gateway.yaml",
           mesh_config(cert_file.read_bytes(), key_file.read_bytes()))  # fmt: skip
    kit.start_control_plane()
    backend.apply_capture()
    backend.start_app()
    backend.start_agent()
    gateway.start_agent()
    backend.wait_ready()
    gateway.wait_ready()

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
