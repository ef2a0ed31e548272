"""An ingress gateway for real, from tests: a pod injected with the `gateway` template
(router), a Gateway with HTTP, an httpsRedirect and HTTPS (a TLS Secret) for its hosts, the
VirtualServices bound to it routing to the backend, and STRICT mTLS in the namespace."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path
from typing import Any

from mesh_kit import BACKEND, MeshKit, ServiceDef, self_signed_certificate, write_yaml
from sidecar_kubelet import NAMESPACE
from sidecar_netns import in_netns
from sidecar_pod import Pod

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


def start_gateway_and_backend(kit: MeshKit) -> tuple[Pod, Pod, Path]:
    """The backend (captured, with its app) and the gateway pod, both ready, the Gateway's
    configuration with a self-signed certificate for SECURE_HOST in place: the backend, the
    gateway and that certificate's file."""
    kit.add_service(BACKEND)
    kit.add_service(INGRESS)
    backend = kit.add_pod("backend-0", app="backend", service_account="backend")
    gateway = kit.add_pod("ingress-0", app="istio-ingressgateway",
                          service_account="istio-ingressgateway",
                          manifest=gateway_pod())  # fmt: skip
    certificates = kit.workdir / "secure"
    certificates.mkdir()
    cert_file, key_file = self_signed_certificate(certificates, SECURE_HOST)
    kit.registry_dir.mkdir(exist_ok=True)
    write_yaml(kit.registry_dir / "gateway.yaml",
               mesh_config(cert_file.read_bytes(), key_file.read_bytes()))  # fmt: skip
    kit.start_control_plane()
    backend.apply_capture()
    backend.start_app()
    backend.start_agent()
    gateway.start_agent()
    backend.wait_ready()
    gateway.wait_ready()
    return backend, gateway, cert_file
