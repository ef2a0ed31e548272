"""The agent without Envoy (DISABLE_ENVOY=true, the `grpc-agent` template), as a real process
against the fake control plane: certificate files for the app, the gRPC bootstrap naming
them, readiness on the status port, renewal, and a clean stop — and never an Envoy."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

from agent_testkit import RunningAgent, wait_exit
from cryptography import x509
from fake_control_plane import FakeControlPlane

from async_waits import eventually
from sidemesh.agent.config import load_settings
from sidemesh.agent.no_envoy import bootstrap_path, certificate_files, render_grpc_bootstrap

SPIFFE = "spiffe://cluster.local/ns/shop/sa/web-sa"


def _serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


async def test_certificates_and_bootstrap_are_written_and_kept_renewed(
    launch: Callable[..., RunningAgent], control_plane: FakeControlPlane, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    agent = launch(env={"DISABLE_ENVOY": "true", "SECRET_TTL": "6s"},
                   args=["--output-certs", str(data)])  # fmt: skip
    await agent.wait_ready()
    assert agent.envoy_pids() == []
    chain, key, root = data / "cert-chain.pem", data / "key.pem", data / "root-cert.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    assert root.read_bytes() == control_plane.pki.root_pem
    leaf = x509.load_pem_x509_certificate(chain.read_bytes())
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.UniformResourceIdentifier) == [SPIFFE]

    bootstrap = json.loads((data / "grpc-bootstrap.json").read_text())
    (server,) = bootstrap["xds_servers"]
    assert server["server_uri"] == f"dns:///{control_plane.address}"
    files = {"certificate_file": str(chain), "private_key_file": str(key),
             "ca_certificate_file": str(root), "refresh_interval": "60s"}  # fmt: skip
    assert server["channel_creds"] == [{"type": "tls", "config": files}]
    assert bootstrap["certificate_providers"] == {
        "default": {"plugin_name": "file_watcher", "config": files}
    }
    node = bootstrap["node"]
    assert node["id"] == "sidecar~127.0.0.1~web-0.shop~shop.svc.cluster.local"
    assert node["metadata"]["GENERATOR"] == "grpc"
    assert node["metadata"]["SERVICE_ACCOUNT"] == "web-sa"
    assert node["metadata"]["LABELS"] == {"app": "web", "version": "v1"}

    first = _serial(chain)
    await eventually(lambda: _serial(chain) != first, timeout=30)  # renewed at half its life
    assert key.stat().st_mode & 0o777 == 0o600

    agent.process.send_signal(signal.SIGTERM)
    assert await wait_exit(agent.process, timeout=15) == 0


async def test_not_ready_until_a_certificate_arrives(
    launch: Callable[..., RunningAgent], control_plane: FakeControlPlane, tmp_path: Path
) -> None:
    control_plane.fail_next_signings = 2  # the first requests fail; the agent retries
    data = tmp_path / "data"
    agent = launch(env={"DISABLE_ENVOY": "true"}, args=["--output-certs", str(data)])
    await eventually(agent.ready_status, timeout=30)  # the status server answers first
    await agent.wait_ready()
    assert len(control_plane.issued) == 1
    assert (data / "grpc-bootstrap.json").exists()


def test_settings_choose_the_paths_and_plaintext(tmp_path: Path) -> None:
    env = {"POD_NAME": "web-0", "POD_NAMESPACE": "shop", "SERVICE_ACCOUNT": "web-sa",
           "INSTANCE_IP": "10.0.0.5", "DISABLE_ENVOY": "true", "SIDEMESH_XDS_PLAINTEXT": "true",
           "PROXY_CONFIG": '{"discoveryAddress": "istiod.istio-system.svc:15010"}',
           "SIDEMESH_PODINFO_DIR": str(tmp_path)}  # fmt: skip
    settings = load_settings(env)
    assert settings.disable_envoy
    assert certificate_files(settings).directory == Path("/var/lib/istio/data")
    assert bootstrap_path(settings) == Path("/var/lib/istio/data/grpc-bootstrap.json")
    moved = load_settings({**env, "GRPC_XDS_BOOTSTRAP": "/etc/grpc/b.json"})
    assert bootstrap_path(moved) == Path("/etc/grpc/b.json")
    (server,) = json.loads(render_grpc_bootstrap(settings))["xds_servers"]
    assert server == {"server_uri": "dns:///istiod.istio-system.svc:15010",
                      "channel_creds": [{"type": "insecure"}],
                      "server_features": ["xds_v3"]}  # fmt: skip


def test_the_agent_without_envoy_imports_nothing_heavy() -> None:
    import subprocess
    import sys

    from test_agent_footprint import HEAVY

    probe = ("import sys; import sidemesh.agent.__main__, sidemesh.agent.no_envoy; "
             f"print(' '.join(m for m in sys.modules if m.startswith({HEAVY!r})))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=60, check=True)  # fmt: skip
    assert result.stdout.strip() == ""
