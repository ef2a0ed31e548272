"""The injected pod spec and the runtime agree.

Every pod in these tests is built by the real injector and run from its output; this test
spells out the contract that makes that work: istio-init's args are exactly what
`sidemesh iptables` needs, istio-proxy's args, env and uid are exactly what the agent runs
with (the kit adds only path flags, each pointing an agent default at the volume the injector
mounts there), and the node identity and metadata the control plane and Envoy see come from
that env and those volumes.
"""

from __future__ import annotations

import json

from mesh_kit import MeshKit, client_and_backend
from sidecar_kubelet import AGENT_PATH_FLAGS, container, expand
from sidecar_netns import http_request, run, uids
from sidecar_pod import SIDEMESH, Pod

from sidemesh.api import names


def _bootstrap_node(pod: Pod) -> dict[str, object]:
    dump = json.loads(pod.admin("/config_dump").body)
    for config in dump["configs"]:
        if config["@type"].endswith("BootstrapConfigDump"):
            node: dict[str, object] = config["bootstrap"]["node"]
            return node
    raise AssertionError("no bootstrap in Envoy's config dump")


def _check_pod(kit: MeshKit, pod: Pod) -> None:
    init = container(pod.manifest, names.CONTAINER_INIT)
    assert init["args"][:1] == ["iptables"]
    assert pod.capture is not None and pod.capture.args[-len(init["args"]) :] == init["args"]
    nat = run(["ip", "netns", "exec", pod.netns, "iptables-save", "-t", "nat"]).stdout
    for rule in ("-A OUTPUT -p tcp -j ISTIO_OUTPUT", "-A PREROUTING -p tcp -j ISTIO_INBOUND",
                 "-p tcp -j REDIRECT --to-ports 15001", "-p tcp -j REDIRECT --to-ports 15006",
                 "-m owner --uid-owner 1337 -j RETURN"):  # fmt: skip
        assert rule in nat, f"{rule!r} not in {pod.name}'s nat table:\n{nat}"
    for port in init["args"][init["args"].index("-d") + 1].split(","):
        assert f"--dport {port} -j RETURN" in nat

    proxy = container(pod.manifest, names.CONTAINER_PROXY)
    args = [expand(arg, pod.agent_env) for arg in proxy["args"]]
    assert args[:3] == ["agent", "proxy", "sidecar"]
    assert f"{pod.manifest['metadata']['namespace']}.svc.cluster.local" in args  # $(POD_NAMESPACE)
    assert pod.agent_argv[: len(SIDEMESH) + len(args)] == [*SIDEMESH, *args]
    assert pod.agent_argv[len(SIDEMESH) + len(args) :: 2] == list(AGENT_PATH_FLAGS)
    assert set(pod.agent_env) == {item["name"] for item in proxy["env"]}
    assert pod.agent is not None
    security = proxy["securityContext"]
    assert uids(pod.agent.pid) == (security["runAsUser"],) * 4

    # Envoy's node: Istio's id and the metadata the agent took from the injected env/podinfo.
    node = _bootstrap_node(pod)
    metadata = node["metadata"]
    assert isinstance(metadata, dict)
    assert node["id"] == f"sidecar~{pod.ip}~{pod.name}.demo~demo.svc.cluster.local"
    assert metadata["WORKLOAD_NAME"] == pod.agent_env["ISTIO_META_WORKLOAD_NAME"] == pod.name
    assert metadata["POD_PORTS"] == pod.agent_env["ISTIO_META_POD_PORTS"]
    assert metadata["APP_CONTAINERS"] == "app"
    assert metadata["INTERCEPTION_MODE"] == "REDIRECT"
    assert metadata["LABELS"] == pod.labels  # read from the downward-API volume
    assert metadata["LABELS"][names.LABEL_TLS_MODE] == "istio"
    revision = pod.manifest["metadata"]["annotations"][names.LABEL_REVISION]
    assert metadata["ISTIO_REVISION"] == revision
    assert metadata["SERVICE_ACCOUNT"] == pod.manifest["spec"]["serviceAccountName"]

    # The control plane identified the proxy from that node and pushed it its own inbound.
    row = {r["pod"]: r for r in kit.proxy_status()}[f"{pod.name}.demo"]
    assert (row["proxy"], row["cluster_id"], row["revision"]) == (
        node["id"], pod.agent_env["ISTIO_META_CLUSTER_ID"], "default",
    )  # fmt: skip


def _check_kubelet_view(kit: MeshKit, pod: Pod) -> None:
    """What kubelet and Prometheus do with the injected spec reaches the app and Envoy."""
    app = container(pod.manifest, "app")
    probe = app["readinessProbe"]["httpGet"]  # rewritten by the injector
    assert (probe["port"], probe["path"]) == (names.PORT_AGENT_STATUS, "/app-health/app/readyz")
    reply = http_request(kit.node, pod.ip, probe["port"], probe["path"])
    assert reply.status == 200, reply
    annotations = pod.manifest["metadata"]["annotations"]
    port = int(annotations[names.ANNOTATION_PROMETHEUS_PORT])
    scraped = http_request(kit.node, pod.ip, port, annotations[names.ANNOTATION_PROMETHEUS_PATH])
    assert scraped.status == 200
    assert "envoy_server_live{} 1" in scraped.body.splitlines()  # Envoy's, via the agent
    assert "istio_agent_cert_expiry_seconds" in scraped.body  # the agent's own


def test_injected_pod_spec_drives_capture_agent_and_control_plane(kit: MeshKit) -> None:
    client, backend = client_and_backend(kit)
    for pod in (client, backend):
        _check_pod(kit, pod)
        _check_kubelet_view(kit, pod)
    # CA_ADDR is the injector's service name, resolved in the pod like cluster DNS would.
    assert backend.agent_env["CA_ADDR"] == "istiod.istio-system.svc:15012"
    listeners = json.loads(backend.admin("/listeners?format=json").body)["listener_statuses"]
    assert {"virtualOutbound", "virtualInbound"} <= {item["name"] for item in listeners}
