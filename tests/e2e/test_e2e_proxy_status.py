"""`sidemesh proxy-status --kubeconfig` reaches istiod through the API server, as istioctl
does: it finds the running istiod pods by label and reads each one's `/debug/syncz` through the
real kube-apiserver's pods/proxy subresource.

The testbed has no kubelet, so the test plays its part for one pod: it creates an istiod-labelled
Pod and reports it Running at an address of this host (the API server refuses to proxy to
loopback), where the very monitoring server discovery runs (`xds.monitoring.MonitoringServer`)
answers for it. Everything between the command and that server is real, down to its
/debug/syncz refusing what does not come from loopback without a token of the control plane's
namespace, checked by the real TokenReview; the command mints one (TokenRequest) and it
crosses the API server's proxy.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from e2e_kit import Cluster, wait_for

from sidemesh.kube.client import make_client
from sidemesh.security.authn import TokenReviewAuthenticator
from sidemesh.xds.monitoring import MonitoringServer

ROWS = [
    {
        "proxy": "sidecar~10.0.0.7~web-7d9f.shop~shop.svc.cluster.local",
        "pod": "web-7d9f.shop", "cluster_id": "Kubernetes", "revision": "ps-canary",
        "istio_version": "1.28.0", "control_plane": "istiod-ps-canary-0",
        "types": {
            "cds": {"status": "SYNCED", "error": None},
            "lds": {"status": "NACK", "error": "duplicate filter chain match"},
        },
    }
]  # fmt: skip


def host_address() -> str | None:
    """An address of this host the API server may proxy to (not loopback or link-local)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith(("127.", "169.254.", "0.")) else address


@pytest.fixture
def monitoring(cluster: Cluster, namespace: str) -> Iterator[tuple[str, int]]:
    """A monitoring server with ROWS, on a non-loopback address of this host, its debug
    endpoints for service accounts of `namespace` (the control plane's here)."""
    address = host_address()
    if address is None:
        pytest.skip("this host has no non-loopback IPv4 address for the API server to proxy to")
    loop = asyncio.new_event_loop()
    authenticator = TokenReviewAuthenticator(make_client(cluster.testbed.kubeconfig))
    server = MonitoringServer(
        metrics=lambda: "", syncz=lambda: ROWS, authenticator=authenticator,
        debug_namespace=namespace,
    )  # fmt: skip
    loop.run_until_complete(server.start(address, 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield address, server.port
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def istiod_pod(name: str, revision: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"app": "istiod", "istio.io/rev": revision, "istio": "istiod"},
        },
        "spec": {
            "containers": [{
                "name": "discovery", "image": "ghcr.io/sidemesh/sidemesh:dev",
                "ports": [{"name": "http-monitoring", "containerPort": port}],
            }],
        },
    }  # fmt: skip


def test_proxy_status_goes_through_the_api_server(
    cluster: Cluster, namespace: str, monitoring: tuple[str, int]
) -> None:
    address, port = monitoring
    wait_for(
        "the namespace's default ServiceAccount",
        lambda: cluster.try_get_json("serviceaccount", "default", "-n", namespace),
    )
    for pod in (
        istiod_pod("istiod-ps-canary-0", "ps-canary", port),
        # Another revision's pod that never starts: listed by the API, never asked.
        istiod_pod("istiod-other-0", "other", 1),
    ):
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=orjson.dumps(pod).decode())
    base = [
        "proxy-status",
        "--kubeconfig",
        str(cluster.testbed.kubeconfig),
        "--istioNamespace",
        namespace,
    ]
    # Before the pod runs there is nothing to ask, and the command says so.
    pending = cluster.sidemesh(*base, "--revision", "ps-canary", check=False)
    assert pending.returncode == 1
    assert f"no running istiod pod of revision ps-canary in namespace {namespace}" in (
        pending.stderr
    )

    # The kubelet's part: the pod runs, at an address of this host.
    status = {"status": {"phase": "Running", "podIP": address, "podIPs": [{"ip": address}]}}
    cluster.kubectl(
        "patch", "pod", "istiod-ps-canary-0", "-n", namespace, "--subresource", "status",
        "--type", "merge", "-p", orjson.dumps(status).decode(),
    )  # fmt: skip

    # Through the API server without a token, the control plane refuses.
    raw = f"/api/v1/namespaces/{namespace}/pods/istiod-ps-canary-0:{port}/proxy/debug/syncz"
    anonymous = cluster.kubectl("get", "--raw", raw, check=False)
    assert anonymous.returncode != 0
    assert "debug endpoints need a bearer token" in anonymous.stderr

    shown = cluster.sidemesh(*base, "--revision", "ps-canary", "--details")
    lines = shown.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "CLUSTER", "CDS"]
    assert lines[1].split() == [
        "web-7d9f.shop", "Kubernetes", "SYNCED", "NACK", "NOT", "SENT", "NOT", "SENT",
        "istiod-ps-canary-0", "ps-canary", "1.28.0",
    ]  # fmt: skip
    assert "web-7d9f.shop LDS NACK: duplicate filter chain match" in lines
    # Without --revision every istiod pod is considered; only the running one answers.
    everything = cluster.sidemesh(*base, "--json")
    assert [row["pod"] for row in orjson.loads(everything.stdout)] == ["web-7d9f.shop"]
