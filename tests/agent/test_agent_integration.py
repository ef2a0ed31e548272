"""The real agent, as a subprocess, with a real Envoy, against the fake control plane.

Every wait is bounded; no assertion is about an exact duration. Agents and their Envoys are
stopped by the `launch` fixture's finalizer whatever happens.
"""

from __future__ import annotations

import base64
import os
import signal
from collections.abc import Callable

import orjson
from agent_testkit import RunningAgent, is_running, run_sidemesh, wait_exit
from cryptography import x509
from fake_control_plane import (
    CONTROL_PLANE_DNS,
    INBOUND_LISTENER,
    LISTENER_REPLY,
    FakeControlPlane,
    wait_for,
)

from sidemesh.agent import http

Launch = Callable[..., RunningAgent]
SPIFFE_ID = "spiffe://cluster.local/ns/shop/sa/web-sa"


async def _secrets(agent: RunningAgent) -> dict[str, dict[str, object]]:
    dump = await agent.admin_json("/config_dump?resource=dynamic_active_secrets")
    return {entry["name"]: entry for entry in dump.get("configs", [])}


async def _workload_certificate(agent: RunningAgent) -> tuple[x509.Certificate, str]:
    secret = (await _secrets(agent))["default"]
    tls = secret["secret"]["tls_certificate"]  # type: ignore[index]
    chain = base64.b64decode(tls["certificate_chain"]["inline_bytes"])
    return x509.load_pem_x509_certificates(chain)[0], str(secret["version_info"])


async def _uptime(agent: RunningAgent) -> int:
    response = await agent.get(agent.admin_port, "/stats?filter=^server%5C.uptime$")
    return int(response.text.split(":")[1])


async def test_agent_brings_envoy_to_ready(launch: Launch, control_plane: FakeControlPlane) -> None:
    agent = launch()
    await agent.wait_ready(timeout=30)

    through_envoy = await agent.get(agent.health_port, "/healthz/ready")
    assert through_envoy.status == 200
    prometheus = await agent.get(agent.prometheus_port, "/stats/prometheus")
    assert prometheus.status == 200
    assert "envoy_server_live" in prometheus.text
    # The listener that came over LDS serves traffic.
    inbound = await http.fetch("127.0.0.1", control_plane.listener_port, "/")
    assert inbound.text == LISTENER_REPLY
    listeners = await agent.admin_json("/listeners?format=json")
    assert INBOUND_LISTENER in [status["name"] for status in listeners["listener_statuses"]]
    # Envoy identified itself the way Istio's control plane expects.
    node = control_plane.nodes[0]
    assert node.id == "sidecar~127.0.0.1~web-0.shop~shop.svc.cluster.local"
    metadata = node.metadata
    assert metadata["NAMESPACE"] == "shop"
    assert metadata["SERVICE_ACCOUNT"] == "web-sa"
    assert metadata["APP_CONTAINERS"] == "web"
    assert metadata["ISTIO_REVISION"] == "default"
    assert dict(metadata["LABELS"]) == {"app": "web", "version": "v1"}
    assert control_plane.nacks == []


async def test_sds_gives_envoy_the_workload_certificate(launch: Launch) -> None:
    agent = launch()
    await agent.wait_ready(timeout=30)
    secrets = await _secrets(agent)
    assert set(secrets) == {"default", "ROOTCA"}
    certificate, _ = await _workload_certificate(agent)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.UniformResourceIdentifier) == [SPIFFE_ID]
    # Envoy redacts the key in its dump: the agent did send one, and it is not readable here.
    tls = secrets["default"]["secret"]["tls_certificate"]  # type: ignore[index]
    assert base64.b64decode(tls["private_key"]["inline_bytes"]) == b"[redacted]"
    assert b"PRIVATE KEY" not in agent.log_path.read_bytes()


async def test_certificate_rotation_reaches_envoy_without_restart(
    launch: Launch, control_plane: FakeControlPlane
) -> None:
    agent = launch(args=["--cert-ttl", "4s", "--renew-fraction", "0.5"])
    await agent.wait_ready(timeout=30)
    (pid,) = agent.envoy_pids()
    first, first_version = await _workload_certificate(agent)
    uptime_before = await _uptime(agent)

    async def rotated() -> bool:
        certificate, _ = await _workload_certificate(agent)
        return certificate.serial_number != first.serial_number

    assert await wait_for(rotated, timeout=20, interval=0.2), agent.log_text()
    _, second_version = await _workload_certificate(agent)
    assert second_version != first_version
    assert agent.envoy_pids() == [pid]
    assert await _uptime(agent) >= uptime_before
    assert control_plane.requested_lifetimes[0] == 4
    assert len(control_plane.issued) >= 2
    assert await agent.ready_status() == 200


async def test_killed_envoy_ends_the_agent_with_an_error(launch: Launch) -> None:
    """The kubelet, not the agent, restarts the proxy: so the pod's restart count shows it."""
    agent = launch()
    await agent.wait_ready(timeout=30)
    (envoy,) = agent.envoy_pids()
    os.kill(envoy, signal.SIGKILL)
    assert await wait_exit(agent.process, timeout=30) == 1, agent.log_text()
    assert "Envoy exited unexpectedly (code -9)" in agent.log_text()


async def test_sigterm_drains_envoy_then_exits_zero(launch: Launch) -> None:
    agent = launch(proxy_config={"terminationDrainDuration": "2s"})
    await agent.wait_ready(timeout=30)
    (envoy,) = agent.envoy_pids()
    agent.process.send_signal(signal.SIGTERM)

    async def not_ready() -> bool:
        return await agent.ready_status() != 200

    # While draining, the pod reports not ready (so it leaves Service endpoints) ...
    assert await wait_for(not_ready, timeout=2)
    # ... and the agent exits 0 after terminationDrainDuration plus a bounded slack.
    code = await wait_exit(agent.process, timeout=2 + 10)
    assert code == 0, agent.log_text()
    assert "draining Envoy" in agent.log_text()
    assert await wait_for(lambda: not is_running(envoy), timeout=5)


async def test_quitquitquit_exits_gracefully(launch: Launch) -> None:
    agent = launch(proxy_config={"terminationDrainDuration": "1s"})
    await agent.wait_ready(timeout=30)
    (envoy,) = agent.envoy_pids()
    assert (await agent.get(agent.status_port, "/quitquitquit")).status == 405
    response = await http.fetch("127.0.0.1", agent.status_port, "/quitquitquit", method="POST")
    assert response.status == 200
    assert await wait_exit(agent.process, timeout=1 + 10) == 0, agent.log_text()
    assert await wait_for(lambda: not is_running(envoy), timeout=5)


async def test_wait_command_returns_once_the_agent_is_ready(launch: Launch) -> None:
    agent = launch()
    url = f"http://127.0.0.1:{agent.status_port}/healthz/ready"
    code, output = await run_sidemesh(["agent", "wait", "--timeout", "30", "--url", url])
    assert code == 0, output + agent.log_text()
    assert await agent.ready_status() == 200


async def test_plaintext_xds_when_explicitly_configured(
    launch: Launch, control_plane: FakeControlPlane
) -> None:
    plaintext = f"127.0.0.1:{control_plane.plaintext_port}"
    agent = launch(proxy_config={"discoveryAddress": plaintext}, args=["--xds-plaintext"])
    await agent.wait_ready(timeout=30)
    bootstrap = orjson.loads((agent.workdir / "proxy" / "envoy-rev.json").read_bytes())
    (xds,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "xds-grpc"]
    assert "transport_socket" not in xds
    assert control_plane.nodes  # Envoy reached the plaintext port


async def test_control_plane_verified_by_dns_name(launch: Launch) -> None:
    """ISTIOD_SAN: the agent and Envoy expect istiod's DNS name although they dial an IP."""
    agent = launch(env={"ISTIOD_SAN": CONTROL_PLANE_DNS})
    await agent.wait_ready(timeout=30)


async def test_control_plane_with_the_wrong_name_is_not_trusted(launch: Launch) -> None:
    agent = launch(env={"ISTIOD_SAN": "impostor.example.com"})

    async def refused() -> bool:
        return "certificate request failed" in agent.log_text()

    assert await wait_for(refused, timeout=15), agent.log_text()
    response = await agent.get(agent.status_port, "/healthz/ready")
    assert response.status == 503
    assert "no workload certificate" in response.text
    agent.process.send_signal(signal.SIGTERM)
    assert await wait_exit(agent.process, timeout=10) == 0


async def test_wrong_token_is_refused_by_the_ca(
    launch: Launch, control_plane: FakeControlPlane
) -> None:
    agent = launch(token="not-the-token")

    async def refused() -> bool:
        return "UNAUTHENTICATED" in agent.log_text()

    assert await wait_for(refused, timeout=15), agent.log_text()
    assert control_plane.issued == []
    assert await agent.ready_status() == 503
