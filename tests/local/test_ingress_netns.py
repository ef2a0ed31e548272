"""An ingress gateway on the local runtime, reached from the host: a Deployment injected with
the `gateway` template (by the local control plane's real webhook), a NodePort Service in front
of it (the host's 127.0.0.1:<nodePort>), a Gateway and a VirtualService bound to it; a request
from the host reaches the backend through its sidecar over mTLS (PeerAuthentication STRICT),
and the backend sees the gateway's SPIFFE identity. Needs root, `ip` and `iptables`."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netns_kit import Local, fresh_runtime, needs_root, owned, ready

import http_requests
from sidemesh.local.node_ports import free_node_port

pytestmark = needs_root

REVISION = "edge"
HOST = "hello.example.com"
GATEWAY_IDENTITY = "spiffe://cluster.local/ns/istio-ingress/sa/istio-ingressgateway"
BACKEND = """
import http.server, json
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"path": self.path,
                           "xfcc": self.headers.get("x-forwarded-client-cert", "")}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("", 8080), Handler).serve_forever()
"""


def manifest(node_port: int) -> list[dict[str, Any]]:
    injected = {"istio.io/rev": REVISION}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": injected}},
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": "istio-ingress", "labels": injected}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "istio-ingressgateway", "namespace": "istio-ingress"}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "backend", "namespace": "shop"},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "backend"}},
                  "template": {"metadata": {"labels": {"app": "backend"}}, "spec": {
                      "terminationGracePeriodSeconds": 2,
                      "containers": [{"name": "backend", "image": "python:3.11",
                                      "command": [sys.executable, "-c", BACKEND],
                                      "ports": [{"name": "http", "containerPort": 8080}]}]}}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "backend", "namespace": "shop"},
         "spec": {"selector": {"app": "backend"},
                  "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}},
        # Istio's way of deploying a gateway: istio-proxy alone, image auto, template gateway.
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "istio-ingressgateway", "namespace": "istio-ingress"},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"istio": "ingressgateway"}},
                  "template": {
                      "metadata": {"labels": {"istio": "ingressgateway",
                                              "app": "istio-ingressgateway"},
                                   "annotations": {"inject.istio.io/templates": "gateway"}},
                      "spec": {"serviceAccountName": "istio-ingressgateway",
                               "terminationGracePeriodSeconds": 2,
                               "containers": [{"name": "istio-proxy", "image": "auto",
                                               "ports": [{"name": "http2",
                                                          "containerPort": 8080}]}]}}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "istio-ingressgateway", "namespace": "istio-ingress"},
         "spec": {"type": "NodePort", "selector": {"istio": "ingressgateway"},
                  "ports": [{"name": "http2", "port": 80, "targetPort": 8080,
                             "nodePort": node_port}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
         "metadata": {"name": "ingress", "namespace": "istio-ingress"},
         "spec": {"selector": {"istio": "ingressgateway"},
                  "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"},
                               "hosts": ["shop/" + HOST]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "hello", "namespace": "shop"},
         "spec": {"hosts": [HOST], "gateways": ["istio-ingress/ingress"],
                  "http": [{"route": [{"destination": {
                      "host": "backend.shop.svc.cluster.local", "port": {"number": 80}}}]}]}},
        {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
         "metadata": {"name": "default", "namespace": "shop"},
         "spec": {"mtls": {"mode": "STRICT"}}},
    ]  # fmt: skip


def get(port: int, host: str, path: str) -> tuple[int, str]:
    """A request from the host itself, as `curl -H 'Host: …' http://127.0.0.1:PORT/…`."""
    answer = http_requests.get("127.0.0.1", port, host, path, timeout=10)
    return answer.status, answer.body


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    with fresh_runtime(tmp_path_factory) as runtime:
        yield runtime


def test_a_request_from_the_host_enters_through_the_ingress_gateway(
    local: Local, tmp_path: Path
) -> None:
    local.run("control-plane", "start", "--revision", REVISION, "--timeout", "60")
    node_port = free_node_port(30000 + os.getpid() % 2000)
    assert node_port is not None, "no free port in the NodePort range"
    path = tmp_path / "ingress.yaml"
    path.write_text("\n---\n".join(json.dumps(d) for d in manifest(node_port)))
    local.run("apply", "-f", str(path))
    assert local.run("get", "gw", "-n", "istio-ingress").stdout == "gateway/ingress\n"

    def running(namespace: str) -> bool:
        pods = owned(local.pods(namespace))
        return len(pods) == 1 and ready(pods[0])

    local.wait("the backend and the gateway ready",
               lambda: running("shop") and running("istio-ingress"))  # fmt: skip
    (gateway,) = owned(local.pods("istio-ingress"))
    (proxy,) = gateway["spec"]["containers"]
    assert proxy["name"] == "istio-proxy" and proxy["args"][:3] == ["agent", "proxy", "router"]
    assert not gateway["spec"].get("initContainers")  # a gateway captures nothing

    answers: list[tuple[int, str]] = []

    def answered(status: int, host: str, path: str = "/") -> bool:
        try:
            answers.append(get(node_port, host, path))
        except OSError as exc:  # not listening yet, or a loaded machine's timeout: again
            answers.append((0, str(exc)))
        return answers[-1][0] == status

    local.wait(
        "the gateway routing hello.example.com", lambda: answered(200, HOST, "/from-the-host")
    )
    reply = json.loads(answers[-1][1])
    assert reply["path"] == "/from-the-host"
    assert GATEWAY_IDENTITY in reply["xfcc"]  # mTLS from the gateway to the backend's sidecar
    local.wait("404 for a host no VirtualService binds",
               lambda: answered(404, "unknown.example.com"))  # fmt: skip
