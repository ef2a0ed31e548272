"""The agent brings a real Envoy to ready against the real control plane, with the pod's
identity, running as the proxy uid."""

from __future__ import annotations

from mesh_kit import BACKEND, MeshKit, start_pods
from sidecar_netns import http_request, uids

from sidemesh.api import names


def test_agent_brings_envoy_to_ready_with_the_pods_spiffe_identity(kit: MeshKit) -> None:
    kit.add_service(BACKEND)
    backend = kit.add_pod("backend-0", app="backend", service_account="backend")
    kit.start_control_plane()
    start_pods(backend)

    # What kubelet's probe sees: Envoy's 15021 on the pod IP, answered by the agent.
    reply = backend.ready()
    assert (reply.status, reply.body.strip()) == (200, "ready")
    # The status port answers on the pod IP too (it is excluded from capture).
    status = http_request(kit.node, backend.ip, names.PORT_AGENT_STATUS, "/healthz/ready")
    assert status.status == 200

    # The certificate Envoy holds came over SDS from the agent, from the real CA.
    served = backend.served_certificates()
    assert served, "Envoy holds no workload certificate"
    sans = {san.get("uri") for chain in served for san in chain["subject_alt_names"]}
    assert sans == {"spiffe://cluster.local/ns/demo/sa/backend"} == {backend.spiffe_id}

    # Agent and Envoy run as the proxy uid (all of real, effective, saved and fs uid).
    assert backend.agent is not None
    envoy = backend.envoy_pid()
    assert envoy is not None
    assert uids(backend.agent.pid) == uids(envoy) == (names.PROXY_UID,) * 4

    # The control plane knows the proxy by Istio's node id and has it fully synced.
    rows = {row["pod"]: row for row in kit.proxy_status()}
    row = rows["backend-0.demo"]
    assert row["proxy"] == f"sidecar~{backend.ip}~backend-0.demo~demo.svc.cluster.local"
    assert {t: s["status"] for t, s in row["types"].items()} == {
        "cds": "SYNCED", "eds": "SYNCED", "lds": "SYNCED",
    }  # fmt: skip
