"""Gateways on Kubernetes, on the real API server: a Gateway applied with kubectl (at
v1beta1, one of the served versions) reaches a gateway proxy's listeners through the discovery's
Kubernetes registry, running with the control plane's own ServiceAccount token and RBAC. Its
`credentialName` Secret is served from a namespace the install lets the control plane read
(`gateways.credentialNamespaces`, by default istio-system) and not from another one, where the
ServiceAccount cannot even list Secrets; the gateway there gets the reason instead.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from e2e_kit import Cluster, ControlPlane, wait_for

from sidemesh.kube.client import make_client
from sidemesh.security.certificates import (
    certificate_to_pem,
    generate_key,
    key_to_pem,
    self_signed_ca,
)
from sidemesh.xds.gateway import gateway_listeners, plan_gateway
from sidemesh.xds.model import MeshSnapshot
from sidemesh.xds.proxy import ProxyInfo, parse_node
from sidemesh.xds.registry_kube import KubeRegistry

SECRET = "sidemesh-e2e-edge-cert"


def _gateway(namespace: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {{name: edge, namespace: {namespace}}}
spec:
  selector: {{istio: e2e-ingressgateway}}
  servers:
  - port: {{number: 8443, name: https, protocol: HTTPS}}
    hosts: ["*"]
    tls: {{mode: SIMPLE, credentialName: {SECRET}}}
  - port: {{number: 8080, name: http, protocol: HTTP}}
    hosts: ["*"]
"""


def _router(namespace: str) -> ProxyInfo:
    return parse_node(
        f"router~10.0.0.20~ingress-0.{namespace}~{namespace}.svc.cluster.local",
        {"NAMESPACE": namespace, "LABELS": {"istio": "e2e-ingressgateway"}},
    )


def _tls_files(directory: Path) -> tuple[Path, Path]:
    key = generate_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge.example.com")])
    certificate = self_signed_ca(
        key, subject=name, now=datetime.datetime.now(datetime.UTC),
        backdate=datetime.timedelta(hours=1), lifetime=datetime.timedelta(days=1),
        path_length=None,
    )  # fmt: skip
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(certificate_to_pem(certificate))
    key_path.write_bytes(key_to_pem(key))
    return cert_path, key_path


class _RunningRegistry:
    """KubeRegistry on its own event loop in a thread; `latest` is the last snapshot."""

    def __init__(self, kubeconfig: Path) -> None:
        self.latest: MeshSnapshot | None = None
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._run, args=(kubeconfig,), daemon=True)
        self._thread.start()

    def _publish(self, snapshot: MeshSnapshot) -> None:
        self.latest = snapshot

    def _run(self, kubeconfig: Path) -> None:
        asyncio.set_event_loop(self._loop)
        client = make_client(kubeconfig)
        registry = KubeRegistry(client, debounce=0.05, credential_namespaces=("istio-system",))
        self._task = self._loop.create_task(registry.run(self._publish))
        try:
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        finally:
            self._loop.run_until_complete(client.close())
            self._loop.close()

    def stop(self) -> None:
        def cancel() -> None:
            if self._task is not None:
                self._task.cancel()

        self._loop.call_soon_threadsafe(cancel)
        self._thread.join(timeout=30)


@pytest.fixture
def registry(control_plane: ControlPlane) -> Iterator[_RunningRegistry]:
    running = _RunningRegistry(control_plane.service_account_kubeconfig())
    try:
        yield running
    finally:
        running.stop()


def test_gateway_and_credential_reach_the_gateway_proxy(
    cluster: Cluster,
    control_plane: ControlPlane,
    namespace: str,
    registry: _RunningRegistry,
    tmp_path: Path,
) -> None:
    account = f"system:serviceaccount:istio-system:istiod-{control_plane.revision}"

    def may_list_secrets(where: str) -> bool:
        answer = cluster.kubectl("auth", "can-i", "list", "secrets", "-n", where,
                                 "--as", account, check=False)  # fmt: skip
        return answer.stdout.strip() == "yes"

    assert may_list_secrets("istio-system")
    assert not may_list_secrets(namespace)

    cert, key = _tls_files(tmp_path)
    for where in ("istio-system", namespace):
        cluster.kubectl("create", "secret", "tls", SECRET, "-n", where,
                        f"--cert={cert}", f"--key={key}")  # fmt: skip
        cluster.kubectl("apply", "-f", "-", input=_gateway(where))
    try:

        def both_gateways() -> MeshSnapshot | None:
            snap = registry.latest
            if snap is None:
                return None
            found = {(g.namespace, g.name) for g in snap.gateways}
            ready = {("istio-system", "edge"), (namespace, "edge")} <= found
            return snap if ready and ("istio-system", SECRET) in snap.credentials else None

        snapshot = wait_for("both Gateways and the istio-system credential", both_gateways)
        assert (namespace, SECRET) not in snapshot.credentials  # never read there

        allowed = plan_gateway(snapshot, _router("istio-system"))
        assert {s.server.port.number for s in allowed.servers} == {8443, 8080}
        (tls,) = [s for s in allowed.servers if s.server.port.number == 8443]
        assert tls.credential is not None
        listeners = gateway_listeners(snapshot, _router("istio-system"))
        assert len(listeners) == 2

        elsewhere = plan_gateway(snapshot, _router(namespace))
        assert {s.server.port.number for s in elsewhere.servers} == {8080}
        # Both Gateways select it (selection is not limited by namespace); neither HTTPS
        # server is served there, each for the same reason: the key stays out of reach.
        assert elsewhere.skipped
        for reason in elsewhere.skipped:
            assert SECRET in reason and f"namespace {namespace!r}" in reason
    finally:
        cluster.kubectl("delete", "gateway", "edge", "-n", "istio-system", check=False)
        cluster.kubectl("delete", "secret", SECRET, "-n", "istio-system", check=False)
