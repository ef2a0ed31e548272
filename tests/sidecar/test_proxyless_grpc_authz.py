"""AuthorizationPolicy enforced by a real proxyless gRPC server (grpcio's xDS server, gRFC A41):
our ADS sends its listener with RBAC filters; real grpcio clients call it over mTLS with xDS
credentials, each with its own mesh certificate. The principal an ALLOW policy names gets
through, another identity gets PERMISSION_DENIED, and a DENY policy wins over the ALLOW.

The certificates and bootstraps are written here as the agent without Envoy would write them
(`tests/sidecar/test_proxyless_grpc_mtls.py` covers the agent itself)."""

from __future__ import annotations

import datetime
import socket
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from proxyless_grpc_kit import METHOD, ads_server, call_through_xds, start_xds_server
from sidemesh.agent.certs import build_csr
from sidemesh.agent.grpc_bootstrap import CertificateFiles, GrpcIdentity, grpc_bootstrap
from sidemesh.api.config import MeshConfig
from sidemesh.security.ca import CertificateAuthority, key_to_pem
from sidemesh.security.identity import SpiffeId
from sidemesh.xds.builder import build_snapshot
from sidemesh.xds.convert import object_key
from sidemesh.xds.model import MeshSnapshot

HOST = "who.demo.svc.cluster.local"
SERVER_LABELS = {"app": "who", "security.istio.io/tlsMode": "istio"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def policy(name: str, action: str, rule: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": "demo"},
            "spec": {"selector": {"matchLabels": {"app": "who"}}, "action": action,
                     "rules": [rule]}}  # fmt: skip


ALLOW_CLIENT = policy("allow-client", "ALLOW", {
    "from": [{"source": {"principals": ["cluster.local/ns/demo/sa/client"]}}],
    "to": [{"operation": {"paths": [METHOD], "methods": ["POST"]}}]})  # fmt: skip
DENY_CLIENT_METHOD = policy("deny-method", "DENY", {
    "from": [{"source": {"serviceAccounts": ["client"]}}],
    "to": [{"operation": {"paths": ["/sidemesh.test.Who/*"]}}]})  # fmt: skip

JWT = {"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
       "metadata": {"name": "jwt", "namespace": "demo"},
       "spec": {"selector": {"matchLabels": {"app": "who"}},
                "jwtRules": [{"issuer": "https://issuer",
                              "jwksUri": "https://issuer/jwks"}]}}  # fmt: skip


def mesh(app_port: int, *extra: dict[str, Any], version: int = 1) -> MeshSnapshot:
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "who", "namespace": "demo"},
         "spec": {"clusterIP": "10.96.0.30", "selector": {"app": "who"},
                  "ports": [{"name": "grpc", "port": 7070, "targetPort": app_port}]}},
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "who-0", "namespace": "demo", "labels": SERVER_LABELS},
         "spec": {"serviceAccountName": "who", "containers": [{"name": "app"}]},
         "status": {"podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
         "metadata": {"name": "who", "namespace": "demo"},
         "spec": {"host": "who", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}},
        *extra,
    ]  # fmt: skip
    return build_snapshot({object_key(o): o for o in objects}, mesh=MeshConfig(), version=version)


def workload(tmp_path: Path, ca: CertificateAuthority, account: str, ip: str, ads_port: int,
             labels: dict[str, str] | None = None) -> Path:  # fmt: skip
    """The files a `grpc-agent` pod's agent writes for its app: certificate, key, root and a
    bootstrap naming them (plaintext xDS to the test's ADS). Returns the bootstrap."""
    files = CertificateFiles(tmp_path / account)
    files.directory.mkdir()
    key = ec.generate_private_key(ec.SECP256R1())
    identity = SpiffeId("cluster.local", "demo", account)
    now = datetime.datetime.now(datetime.UTC)
    chain = ca.sign_csr(build_csr(key, identity.uri), identity=identity, now=now)
    files.certificate_chain.write_text("".join(chain[:-1]))
    files.private_key.write_bytes(key_to_pem(key))
    files.root_certificate.write_text(ca.root_pem())
    node = GrpcIdentity(pod_name=f"{account}-0", namespace="demo", instance_ip=ip,
                        domain="demo.svc.cluster.local")  # fmt: skip
    bootstrap = files.directory / "grpc-bootstrap.json"
    metadata = {"LABELS": labels or {"app": account}}
    bootstrap.write_bytes(grpc_bootstrap(node, discovery_address=f"127.0.0.1:{ads_port}",
                                         certificates=files, metadata=metadata))  # fmt: skip
    return bootstrap


async def test_allow_lets_the_named_principal_through_and_deny_wins(tmp_path: Path) -> None:
    ca = CertificateAuthority.self_signed(trust_domain="cluster.local",
                                          now=datetime.datetime.now(datetime.UTC))  # fmt: skip
    app_port = free_port()
    async with ads_server(mesh(app_port, ALLOW_CLIENT)) as (ads, ads_port):
        server_bootstrap = workload(tmp_path, ca, "who", "127.0.0.1", ads_port, SERVER_LABELS)
        client = workload(tmp_path, ca, "client", "127.0.0.9", ads_port)
        intruder = workload(tmp_path, ca, "intruder", "127.0.0.8", ads_port)
        server = start_xds_server(server_bootstrap, "who", app_port, tmp_path / "server.log")
        try:
            client_id = "spiffe://cluster.local/ns/demo/sa/client"
            # Called until the server has its listener (it serves nothing before).
            answers = await call_through_xds(client, f"{HOST}:7070", calls=2,
                                             until=f"who {client_id}",
                                             xds_credentials=True)  # fmt: skip
            assert answers == [f"who {client_id}"] * 2
            # The same listener, another mesh identity: refused by the ALLOW filter.
            answers = await call_through_xds(intruder, f"{HOST}:7070", calls=2,
                                             xds_credentials=True)  # fmt: skip
            assert answers == ["error PERMISSION_DENIED"] * 2

            # A DENY policy matching the allowed client: DENY is evaluated first.
            ads.set_snapshot(mesh(app_port, ALLOW_CLIENT, DENY_CLIENT_METHOD, version=2))
            answers = await call_through_xds(client, f"{HOST}:7070", calls=2,
                                             until="error PERMISSION_DENIED",
                                             xds_credentials=True)  # fmt: skip
            assert answers == ["error PERMISSION_DENIED"] * 2

            # Back to the ALLOW alone, plus a RequestAuthentication: gRPC cannot verify a JWT,
            # so the server refuses every call (fail closed), the allowed client's too.
            ads.set_snapshot(mesh(app_port, ALLOW_CLIENT, version=3))
            await call_through_xds(client, f"{HOST}:7070", calls=1, until=f"who {client_id}",
                                   xds_credentials=True)  # fmt: skip
            ads.set_snapshot(mesh(app_port, ALLOW_CLIENT, JWT, version=4))
            answers = await call_through_xds(client, f"{HOST}:7070", calls=1,
                                             until="error PERMISSION_DENIED",
                                             xds_credentials=True)  # fmt: skip
            assert answers == ["error PERMISSION_DENIED"]
            # grpcio took every listener we sent it (a filter it refused would be a NACK).
            assert ads.metrics.nacks == {}
        finally:
            server.terminate()
            server.wait(timeout=15)
