"""Runs the real agent (`sidemesh agent proxy sidecar`) as a subprocess for integration tests:
paths in a temporary directory, ports picked free, the fake control plane as CA and xDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from fake_control_plane import FakeControlPlane, free_port, wait_for

from proc_support import children as children
from proc_support import process_name as process_name
from sidemesh.agent import http

_SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*",?)*\})? '
    r"[-+0-9.eEInfNa]+( -?[0-9]+)?$"
)


def assert_valid_text_format(body: str) -> None:
    """The rules concatenation could break: line shapes, final newline, no # EOF, unique TYPEs."""
    assert body == "" or body.endswith("\n")
    typed: set[str] = set()
    for line in body.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            assert line != "# EOF"
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] == "TYPE":
                assert parts[2] not in typed, f"family {parts[2]} declared twice"
                typed.add(parts[2])
            continue
        assert _SAMPLE.match(line), line


SIDEMESH = [sys.executable, "-c", "from sidemesh.cli.main import main; main()"]


async def run_sidemesh(args: list[str], timeout: float = 60) -> tuple[int, str]:
    """Run `sidemesh ARGS` without blocking the event loop; (exit code, stdout+stderr)."""
    process = await asyncio.create_subprocess_exec(
        *SIDEMESH,
        *args,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout=timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, output.decode()


def is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@dataclass
class RunningAgent:
    process: subprocess.Popen[bytes]
    workdir: Path
    status_port: int
    admin_port: int
    health_port: int
    prometheus_port: int
    log_path: Path
    envoy_pids_seen: set[int] = field(default_factory=set)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def envoy_pids(self) -> list[int]:
        pids = [pid for pid in children(self.process.pid) if process_name(pid) == "envoy"]
        self.envoy_pids_seen.update(pids)
        return pids

    async def get(self, port: int, path: str, timeout: float = 2.0) -> http.HttpResponse:
        return await http.fetch("127.0.0.1", port, path, timeout=timeout)

    async def ready_status(self) -> int:
        try:
            return (await self.get(self.status_port, "/healthz/ready")).status
        except http.HttpError:
            return 0

    async def wait_ready(self, timeout: float = 30.0) -> None:
        async def ready() -> bool:
            return await self.ready_status() == 200

        if not await wait_for(ready, timeout=timeout, interval=0.1):
            raise AssertionError(f"agent not ready within {timeout}s; log:\n{self.log_text()}")

    async def admin_json(self, path: str) -> Any:
        response = await self.get(self.admin_port, path)
        assert response.status == 200, response.text
        return orjson.loads(response.body)

    def stop(self) -> None:
        """Finalizer: end the agent and any Envoy it started, whatever state they are in."""
        self.envoy_pids()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        for pid in self.envoy_pids_seen:
            with contextlib.suppress(ProcessLookupError):
                if is_running(pid) and process_name(pid) == "envoy":
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_agent(
    plane: FakeControlPlane,
    *,
    proxy_config: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
    token: str | None = None,
) -> RunningAgent:
    # A short directory: the SDS socket path must fit in a Unix socket address.
    workdir = Path(tempfile.mkdtemp(prefix="smagent-", dir="/tmp"))
    root = plane.write_root(workdir / "root-cert.pem")
    token_path = workdir / "istio-token"
    token_path.write_text(plane.token if token is None else token)
    podinfo = workdir / "pod"
    podinfo.mkdir()
    (podinfo / "labels").write_text('app="web"\nversion="v1"\n')
    (podinfo / "annotations").write_text('istio.io/rev="default"\n')
    ports = [free_port() for _ in range(4)]
    while len(set(ports)) < 4:
        ports = [free_port() for _ in range(4)]
    status_port, admin_port, health_port, prometheus_port = ports
    config = {"terminationDrainDuration": "1s", "concurrency": 1, **(proxy_config or {})}
    process_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "POD_NAME": "web-0",
        "POD_NAMESPACE": "shop",
        "SERVICE_ACCOUNT": "web-sa",
        "INSTANCE_IP": "127.0.0.1",
        "CA_ADDR": plane.address,
        "TRUST_DOMAIN": "cluster.local",
        "PROXY_CONFIG": orjson.dumps(config).decode(),
        "ISTIO_META_APP_CONTAINERS": "web",
        "ISTIO_META_CLUSTER_ID": "Kubernetes",
        "ISTIO_META_WORKLOAD_NAME": "web",
        "SIDEMESH_XDS_DELTA": "false",  # the fake control plane speaks State-of-the-World only
        **(env or {}),
    }
    command = [
        *SIDEMESH,
        "agent",
        "proxy",
        "sidecar",
        "--domain",
        "shop.svc.cluster.local",
        "--proxyLogLevel=warning",
        "--proxyComponentLogLevel=misc:error",
        "--log_output_level=default:info",
        "--status-port",
        str(status_port),
        "--admin-port",
        str(admin_port),
        "--health-port",
        str(health_port),
        "--prometheus-port",
        str(prometheus_port),
        "--status-host",
        "127.0.0.1",
        "--probe-host",
        "127.0.0.1",
        "--config-dir",
        str(workdir / "proxy"),
        "--token-path",
        str(token_path),
        "--root-cert",
        str(root),
        "--podinfo-dir",
        str(podinfo),
        *(args or []),
    ]
    log_path = workdir / "agent.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, env=process_env, stdout=log_file, stderr=subprocess.STDOUT
        )
    return RunningAgent(
        process=process,
        workdir=workdir,
        status_port=status_port,
        admin_port=admin_port,
        health_port=health_port,
        prometheus_port=prometheus_port,
        log_path=log_path,
    )


async def wait_exit(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    """The exit code, or None if still running after `timeout` (never blocks the loop)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            return code
        await asyncio.sleep(0.05)
    return process.poll()
