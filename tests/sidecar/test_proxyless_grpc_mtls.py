"""Proxyless gRPC with the pod's mesh identity, every part real: the discovery (CA and ADS on
its TLS port), the agent without Envoy (`grpc-agent`'s istio-proxy) writing the certificate
files and the bootstrap, and a grpcio client that uses that bootstrap as is: its xDS stream
goes over TLS to :15012 presenting the agent's certificate (the discovery binds it to its
namespace), and — a DestinationRule asking ISTIO_MUTUAL — its call goes over mTLS with
xDS credentials to a server that requires a mesh certificate and reports whose it was."""

from __future__ import annotations

import datetime
import json
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from async_waits import eventually
from proxyless_grpc_kit import (
    call_through_xds,
    start_agent_without_envoy,
    start_xds_server,
    who_server,
)
from sidemesh.agent import http
from sidemesh.agent.certs import build_csr
from sidemesh.api.config import MeshConfig
from sidemesh.security.authn import LocalTokenAuthenticator, issue_local_token
from sidemesh.security.ca import CertificateAuthority, key_to_pem
from sidemesh.security.identity import SpiffeId
from sidemesh.xds.builder import build_snapshot
from sidemesh.xds.convert import object_key
from sidemesh.xds.model import MeshSnapshot
from sidemesh.xds.server import ControlPlaneConfig, ControlPlaneServer

HOST = "who.demo.svc.cluster.local"
CLIENT_ID = "spiffe://cluster.local/ns/demo/sa/client"
SERVER_ID = SpiffeId("cluster.local", "demo", "who")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def mesh(server_port: int, tls_mode: str, *extra: dict[str, Any]) -> MeshSnapshot:
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "who", "namespace": "demo"},
         "spec": {"clusterIP": "10.96.0.30", "selector": {"app": "who"},
                  "ports": [{"name": "grpc", "port": 7070, "targetPort": server_port}]}},
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "who-0", "namespace": "demo",
                      "labels": {"app": "who", "security.istio.io/tlsMode": "istio"}},
         "spec": {"serviceAccountName": "who", "containers": [{"name": "app"}]},
         "status": {"podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
         "metadata": {"name": "who", "namespace": "demo"},
         "spec": {"host": "who", "trafficPolicy": {"tls": {"mode": tls_mode}}}},
        *extra,
    ]  # fmt: skip
    return build_snapshot({object_key(o): o for o in objects}, mesh=MeshConfig(), version=1)


@pytest.fixture
async def discovery() -> AsyncIterator[tuple[ControlPlaneServer, CertificateAuthority, Path]]:
    workdir = Path(tempfile.mkdtemp(prefix="smgrpc-", dir="/tmp"))
    now = datetime.datetime.now(datetime.UTC)
    ca = CertificateAuthority.self_signed(trust_domain="cluster.local", now=now)
    server = ControlPlaneServer(
        config=ControlPlaneConfig(host="127.0.0.1", plaintext_port=None, tls_port=0,
                                  monitoring_port=None, instance_id="cp-grpc",
                                  extra_dns_names=("localhost",)),
        ca=ca, authenticator=LocalTokenAuthenticator(workdir / "tokens.json"),
    )  # fmt: skip
    await server.start()
    try:
        yield server, ca, workdir
    finally:
        await server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def agent_ready(status_port: int) -> None:
    async def ready() -> bool:
        try:
            answer = await http.fetch("127.0.0.1", status_port, "/healthz/ready", timeout=2)
        except http.HttpError:
            return False
        return answer.status == 200

    await eventually(ready, timeout=60)


def server_credentials(ca: CertificateAuthority) -> grpc.ServerCredentials:
    """The server's mesh certificate (as its own agent would hold it); clients must show one."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    chain = ca.sign_csr(build_csr(key, SERVER_ID.uri), identity=SERVER_ID, now=now)
    return grpc.ssl_server_credentials(
        [(key_to_pem(key), "".join(chain[:-1]).encode())],
        root_certificates=ca.root_pem().encode(), require_client_auth=True,
    )  # fmt: skip


async def test_an_agent_without_envoy_gives_a_grpc_client_xds_over_tls_and_mtls_calls(
    discovery: tuple[ControlPlaneServer, CertificateAuthority, Path],
) -> None:
    server, ca, workdir = discovery
    token = issue_local_token(workdir / "tokens.json", namespace="demo", service_account="client")
    status_port = free_port()
    agent = start_agent_without_envoy(
        workdir / "client", ca_address=f"localhost:{server.ports['xds-tls']}", token=token,
        root_pem=ca.root_pem().encode(), status_port=status_port, namespace="demo",
        service_account="client", pod_name="client-0", labels={"app": "client"},
    )  # fmt: skip
    try:
        await agent_ready(status_port)
        bootstrap = workdir / "client" / "data" / "grpc-bootstrap.json"
        assert (
            json.loads(bootstrap.read_text())["xds_servers"][0]["channel_creds"][0]["type"] == "tls"
        )
        async with who_server("who", server_credentials(ca)) as port:
            server.ads.set_snapshot(mesh(port, "ISTIO_MUTUAL"))
            answers = await call_through_xds(bootstrap, f"{HOST}:7070", calls=3,
                                             xds_credentials=True)  # fmt: skip
        assert answers == [f"who {CLIENT_ID}"] * 3  # mTLS, with the agent's certificate
        # The client sent no token: :15012 served it because its certificate authenticated it.
        assert server.xds_metrics.refusals == {}
    finally:
        agent.terminate()
        assert agent.wait(timeout=15) == 0, (workdir / "client" / "agent.log").read_text()


# requestPrincipals needs a verified JWT, which a proxyless gRPC server cannot check: the
# rule allows nothing there (test_proxyless_grpc_authz.py has the rules gRPC does enforce).
ALLOW_CLIENT = {"from": [{"source": {"principals": [CLIENT_ID.removeprefix("spiffe://")],
                                     "requestPrincipals": ["*"]}}]}  # fmt: skip
POLICY = {
    "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
    "metadata": {"name": "who", "namespace": "demo"},
    "spec": {"selector": {"matchLabels": {"app": "who"}}, "rules": [ALLOW_CLIENT]},
}  # fmt: skip


async def test_an_xds_server_serves_mtls_from_its_own_agent_and_fails_closed_under_policy(
    discovery: tuple[ControlPlaneServer, CertificateAuthority, Path],
) -> None:
    """Both ends proxyless: the server (gRPC's xDS server) asks for its own listener and
    requires the client's mesh certificate; each side's certificate comes from its agent."""
    server, ca, workdir = discovery
    tokens = workdir / "tokens.json"
    agents, ports = [], {"client": free_port(), "who": free_port()}
    for account, labels in (
        ("client", {"app": "client"}),
        ("who", {"app": "who", "security.istio.io/tlsMode": "istio"}),
    ):
        token = issue_local_token(tokens, namespace="demo", service_account=account)
        agents.append(start_agent_without_envoy(
            workdir / account, ca_address=f"localhost:{server.ports['xds-tls']}", token=token,
            root_pem=ca.root_pem().encode(), status_port=ports[account], namespace="demo",
            service_account=account, pod_name=f"{account}-0", labels=labels,
        ))  # fmt: skip
    app_port = free_port()
    server.ads.set_snapshot(mesh(app_port, "ISTIO_MUTUAL"))
    xds_server = None
    try:
        for port in ports.values():
            await agent_ready(port)
        xds_server = start_xds_server(workdir / "who" / "data" / "grpc-bootstrap.json", "who",
                                      app_port, workdir / "server.log")  # fmt: skip
        client_bootstrap = workdir / "client" / "data" / "grpc-bootstrap.json"
        answers = await call_through_xds(client_bootstrap, f"{HOST}:7070", calls=3,
                                         xds_credentials=True)  # fmt: skip
        assert answers == [f"who {CLIENT_ID}"] * 3

        # An AuthorizationPolicy gRPC cannot honour: the server refuses every call.
        server.ads.set_snapshot(mesh(app_port, "ISTIO_MUTUAL", POLICY))
        answers = await call_through_xds(client_bootstrap, f"{HOST}:7070", calls=1,
                                         until="error PERMISSION_DENIED",
                                         xds_credentials=True)  # fmt: skip
        assert answers == ["error PERMISSION_DENIED"]
    finally:
        for process in (*agents, *([xds_server] if xds_server else [])):
            process.terminate()
        for process in agents:
            assert process.wait(timeout=15) == 0
        if xds_server is not None:
            xds_server.wait(timeout=15)
