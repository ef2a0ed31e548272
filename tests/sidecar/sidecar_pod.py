"""A pod of the whole-sidecar tests, run the way kubelet runs the injected spec: the
istio-init args as root, the app as uid 4242, istio-proxy's args and env as its runAsUser; and
what a test asks of a running pod (readiness, Envoy's admin, requests made by its app)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sidecar_kubelet import (
    HTTP_PORT,
    NAMESPACE,
    TCP_PORT,
    agent_path_flags,
    container,
    expand,
    materialise_volumes,
    resolve_env,
)
from sidecar_netns import (
    COMMAND_TIMEOUT,
    Process,
    ProcessDied,
    Reply,
    can_connect,
    children,
    http_request,
    parse_stats,
    process_name,
    run,
    unprivileged,
    wait_until,
)

from sidemesh.api import names

if TYPE_CHECKING:
    from mesh_kit import MeshKit

APP_UID = APP_GID = 4242
SIDEMESH = [sys.executable, "-c", "from sidemesh.cli.main import main; main()"]
APP_SCRIPT = Path(__file__).with_name("sidecar_app.py")
READY_TIMEOUT = 60.0


@dataclass
class Pod:
    kit: MeshKit
    name: str
    netns: str
    ip: str
    manifest: dict[str, Any]  # as injected, plus what kubelet fills in (node, IPs)
    token: str
    directory: Path
    capture: subprocess.CompletedProcess[str] | None = None
    app: Process | None = None
    agent: Process | None = None
    agent_argv: list[str] = field(default_factory=list)
    agent_env: dict[str, str] = field(default_factory=dict)
    app_ports: tuple[int, ...] = (HTTP_PORT, TCP_PORT)

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.manifest["metadata"].get("labels") or {})

    @property
    def spiffe_id(self) -> str:
        account = self.manifest["spec"]["serviceAccountName"]
        return f"spiffe://cluster.local/ns/{NAMESPACE}/sa/{account}"

    def apply_capture(self) -> subprocess.CompletedProcess[str]:
        """Run the istio-init container's args, as its securityContext says (root)."""
        init = container(self.manifest, names.CONTAINER_INIT)
        assert (init.get("securityContext") or {}).get("runAsUser", 0) == 0
        self.capture = run(["ip", "netns", "exec", self.netns, *SIDEMESH, *init["args"]])
        return self.capture

    def start_app(self) -> Process:
        ports = [arg for port in self.app_ports for arg in ("--port", str(port))]
        argv = self.app_command("serve", "--name", self.name, *ports)
        self.app = self.kit.spawn(f"{self.name}-app", self.netns, argv)
        wait_until(lambda: can_connect(self.netns, "127.0.0.1", self.app_ports[0]), timeout=30,
                   what=f"{self.name}'s app listening")  # fmt: skip
        return self.app

    def start_agent(self) -> Process:
        """Run istio-proxy: the injected args and env, as the injected uid/gid."""
        proxy = container(self.manifest, names.CONTAINER_PROXY)
        env = resolve_env(self.manifest, proxy)
        mounts = materialise_volumes(
            self.manifest, proxy, self.directory, token=self.token,
            root_cert=self.kit.root_cert(),
        )  # fmt: skip
        args = [expand(arg, env) for arg in proxy["args"]]
        security = proxy.get("securityContext") or {}
        uid, gid = int(security["runAsUser"]), int(security["runAsGroup"])
        self.agent_env = env
        self.agent_argv = [*SIDEMESH, *args, *agent_path_flags(mounts)]
        process_env = {**env, "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                       "HOME": str(self.directory)}  # fmt: skip
        self.agent = self.kit.spawn(
            f"{self.name}-agent",
            self.netns,
            [*unprivileged(uid, gid), *self.agent_argv],
            env=process_env,
        )
        return self.agent

    def start(self) -> Pod:
        """kubelet's order: init container, then the app, then the proxy (classic layout)."""
        self.apply_capture()
        self.start_app()
        self.start_agent()
        self.wait_ready()
        return self

    def ready(self) -> Reply:
        probe = container(self.manifest, names.CONTAINER_PROXY)["readinessProbe"]["httpGet"]
        return http_request(self.kit.node, self.ip, int(probe["port"]), probe["path"])

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        def ready() -> bool:
            if self.agent is not None and not self.agent.alive():
                raise ProcessDied(f"{self.name}'s agent exited: {self.agent.output()}")
            return self.ready().status == 200

        try:
            wait_until(ready, timeout=timeout, every=0.05, what=f"{self.name} ready")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- agent log ---\n{self.agent_log()}") from None

    def agent_log(self) -> str:
        return self.agent.output() if self.agent is not None else "(no agent)"

    def envoy_pid(self) -> int | None:
        if self.agent is None:
            return None
        found = [pid for pid in children(self.agent.pid) if process_name(pid) == "envoy"]
        return found[0] if found else None

    def admin(self, path: str) -> Reply:
        return http_request(self.netns, "127.0.0.1", names.PORT_ENVOY_ADMIN, path)

    def stats(self) -> dict[str, int]:
        return parse_stats(self.admin("/stats").body)

    def served_certificates(self) -> list[dict[str, Any]]:
        """Envoy's /certs: the workload certificates its TLS contexts hold now."""
        certificates = json.loads(self.admin("/certs").body).get("certificates") or []
        return [chain for entry in certificates for chain in entry.get("cert_chain") or []]

    def app_command(self, *args: str) -> list[str]:
        return [*unprivileged(APP_UID, APP_GID), sys.executable, str(APP_SCRIPT), *args]

    def app_get(self, *urls: str, count: int = 1, interval: float = 0.0,
                timeout: float = 5.0) -> dict[str, Any]:  # fmt: skip
        """Requests made by the app (uid 4242) from inside the pod; the client's summary."""
        argv = self.app_command("get", *urls, "--count", str(count), "--interval",
                                str(interval), "--timeout", str(timeout))  # fmt: skip
        bound = count * (len(urls) * (timeout + 1) + interval) + COMMAND_TIMEOUT
        result = run(["ip", "netns", "exec", self.netns, *argv], timeout=bound)
        summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        return summary

    def start_app_get(self, *urls: str, **options: Any) -> Process:
        """Like app_get, in the background; read the summary with `summary(process)`."""
        extra = [f"--{key}={value}" for key, value in options.items()]
        return self.kit.spawn(
            f"{self.name}-client",
            self.netns,
            self.app_command("get", *urls, *extra),
            stdout=True,
        )


def summary(process: Process, timeout: float) -> dict[str, Any]:
    process.wait(timeout)
    stdout = process.log.with_suffix(".out").read_text()
    lines = stdout.strip().splitlines()
    assert lines, f"{process.name} printed nothing: {process.output()}"
    result: dict[str, Any] = json.loads(lines[-1])
    return result
