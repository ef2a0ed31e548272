"""The demo's hands and eyes: commands through `sidemesh local` (as a user would type them),
narrated with rich, and bounded waits on the runtime's state. The steps are in `runner.py`."""

from __future__ import annotations

import contextlib
import http.client
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from rich.console import Console
from rich.text import Text

from sidemesh.api import names
from sidemesh.demo import script
from sidemesh.demo.script import Command
from sidemesh.local import network
from sidemesh.local.daemon import sidemesh_command
from sidemesh.local.model import PodRecord, State
from sidemesh.local.netns import connect_in_netns
from sidemesh.local.pki import LocalPki
from sidemesh.local.store import Store
from sidemesh.xds.monitoring import DEBUG_SERVICE_ACCOUNT

COMMAND_TIMEOUT_SECONDS = 180.0
POLL_SECONDS = 0.5
HTTP_TIMEOUT_SECONDS = 5.0
MAX_HTTP_BODY = 16 * 2**20

# How a request is made from a pod's container: script.fetch_command's shape.
RequestCommand = Callable[[str, str, str, str], Command]


class StepFailed(Exception):
    """A step's outcome is not what the guide promises; the message says what was seen."""


@dataclass(frozen=True)
class DemoSettings:
    state_dir: Path
    manifest: Path
    keep: bool = False
    first_revision: str = script.FIRST_REVISION
    second_revision: str = script.SECOND_REVISION
    wait_seconds: float = 180.0


@dataclass
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


class Session:
    """One demo run's runtime: its state directory, console and scratch directory."""

    def __init__(self, settings: DemoSettings, console: Console) -> None:
        self.settings = settings
        self.console = console
        self.store = Store(settings.state_dir)
        self.work_dir = Path(tempfile.mkdtemp(prefix="sidemesh-demo-"))
        self.sidemesh = sidemesh_command()[0]
        # Every request the demo made from a pod, (namespace, pod, url) -> count: the golden
        # signals are checked against it.
        self.sent: Counter[tuple[str, str, str]] = Counter()

    # --- running commands -------------------------------------------------------------------

    def run(self, command: Command, *, show: bool = True, check: bool = True) -> CommandResult:
        if show:
            if command.kubectl:
                self.console.print(Text(f"$ {command.kubectl}", style="bold cyan"), soft_wrap=True)
                self.console.print(Text(f"  (here: {command.local})", style="dim"), soft_wrap=True)
            else:
                self.console.print(Text(f"$ {command.local}", style="bold cyan"), soft_wrap=True)
        argv = [*self.sidemesh, "local", "--state-dir", str(self.settings.state_dir)]
        completed = subprocess.run(
            [*argv, *command.local_args],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_SECONDS,
            check=False,
        )
        result = CommandResult(completed.returncode, completed.stdout, completed.stderr)
        if show:
            output = (result.stdout + result.stderr).rstrip()
            if result.returncode != 0 and "Traceback" in result.stderr:
                output = script.refusal_in(result.stderr) or output  # the error, not the stack
            if output:
                self.console.print(Text(output), soft_wrap=True)
            self.console.print()
        if check and result.returncode != 0:
            raise StepFailed(f"`{command.local}` failed ({result.returncode}): {result.stderr}")
        return result

    def say(self, text: str) -> None:
        self.console.print(Text(text, style="italic"))

    def state(self) -> State:
        return self.store.read()

    def wait_for(
        self,
        what: str,
        done: Callable[[State], bool],
        explain: Callable[[State], str] | None = None,
    ) -> float:
        """Seconds until `done(state)` held; StepFailed after the bounded wait, saying what
        `explain(state)` saw then."""
        started = time.monotonic()
        deadline = started + self.settings.wait_seconds
        while True:
            if self.store.exists() and done(self.state()):
                return time.monotonic() - started
            if time.monotonic() >= deadline:
                seen = ""
                if explain is not None and self.store.exists():
                    seen = f" (seen: {explain(self.state())})"
                raise StepFailed(
                    f"gave up after {self.settings.wait_seconds:.0f} s waiting: {what}{seen}"
                )
            time.sleep(POLL_SECONDS)

    def manifest_file(self, name: str, objects: list[dict[str, Any]]) -> Path:
        path = self.work_dir / name
        path.write_text(yaml.safe_dump_all(objects, sort_keys=False), encoding="utf-8")
        return path

    def pod_named(self, namespace: str, app: str) -> PodRecord:
        for pod in script.live_pods(self.state(), namespace):
            if pod.labels.get("app") == app:
                return pod
        raise StepFailed(f"no {app} pod in namespace {namespace}")

    def fetch(
        self,
        namespace: str,
        pod: str,
        url: str,
        *,
        show: bool,
        container: str = "client",
        command: RequestCommand = script.fetch_command,
    ) -> CommandResult:
        """A request from inside a pod's app container (so through its sidecar, if any)."""
        self.sent[(namespace, pod, url)] += 1
        return self.run(command(namespace, pod, url, container), show=show, check=False)

    def fetch_until(
        self,
        namespace: str,
        pod: str,
        url: str,
        accept: Callable[[CommandResult], bool],
        *,
        container: str = "client",
        command: RequestCommand = script.fetch_command,
    ) -> CommandResult:
        """Retry quietly (configuration takes a moment to reach the sidecars), then show the
        accepted attempt (or the last one)."""
        deadline = time.monotonic() + self.settings.wait_seconds
        while True:
            result = self.fetch(namespace, pod, url, show=False, container=container,
                                command=command)  # fmt: skip
            if accept(result) or time.monotonic() >= deadline:
                if not accept(result):
                    return result
                return self.fetch(namespace, pod, url, show=True, container=container,
                                  command=command)  # fmt: skip
            time.sleep(1.0)

    def node_get(
        self, host: str, port: int, path: str, headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes]:
        """GET from the node's network namespace (where pod addresses are routed): status and
        body. OSError when the connection fails."""
        sock = connect_in_netns(self.state().network.node_netns, host, port, HTTP_TIMEOUT_SECONDS)
        return http_get(sock, host, path, headers)

    def syncz(self, revision: str) -> list[dict[str, Any]]:
        """The sidecars connected to `revision`'s control plane (its `/debug/syncz`)."""
        rows: list[dict[str, Any]] = []
        # /debug/* wants a token of the control plane's namespace from off-loopback callers.
        token = LocalPki(self.settings.state_dir).token(
            names.CONTROL_PLANE_NAMESPACE, DEBUG_SERVICE_ACCOUNT
        )
        for pod in script.control_plane_pods(self.state(), revision):
            if not pod.pod_ip:
                continue
            _, body = self.node_get(
                pod.pod_ip,
                names.PORT_MONITORING,
                "/debug/syncz",
                {"Authorization": f"Bearer {token}"},
            )
            rows += orjson.loads(body)
        return rows

    def scrape(self, pod: PodRecord) -> str:
        """The pod's sidecar's merged Prometheus endpoint (`:15020/stats/prometheus`)."""
        if not pod.pod_ip:
            raise StepFailed(f"{pod.name} has no address to scrape")
        try:
            status, body = self.node_get(pod.pod_ip, names.PORT_AGENT_STATUS, "/stats/prometheus")
        except OSError as exc:
            raise StepFailed(f"scraping {pod.name}'s sidecar: {exc}") from exc
        if status != 200:
            raise StepFailed(f"{pod.name}'s sidecar answered /stats/prometheus with HTTP {status}")
        return body.decode("utf-8", errors="replace")

    def sidecar_memory(self, pod: PodRecord) -> int:
        """RSS in bytes of the pod's sidecar processes (agent + Envoy: the proxy uid's)."""
        total = 0
        for pid in network.netns_pids(pod.netns or ""):
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
                fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
                if int(fields["Uid"].split()[0]) == script.SIDECAR_UID:
                    total += int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
        return total

    def cleanup(self, *, show: bool) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.run(Command(("down",)), show=show, check=False)


def http_get(
    sock: socket.socket, host: str, path: str, headers: Mapping[str, str] | None = None
) -> tuple[int, bytes]:
    """One HTTP/1.1 GET over a connected socket (closed after): the status and the body
    (Envoy's admin refuses HTTP/1.0; http.client reads chunked answers)."""
    sock.settimeout(HTTP_TIMEOUT_SECONDS)
    connection = http.client.HTTPConnection(host, timeout=HTTP_TIMEOUT_SECONDS)
    connection.sock = sock  # already connected (in another network namespace)
    try:
        connection.request("GET", path, headers={"Connection": "close", **(headers or {})})
        response = connection.getresponse()
        return response.status, response.read(MAX_HTTP_BODY)
    except http.client.HTTPException as exc:
        raise OSError(f"GET {path} from {host}: {exc!r}") from exc
    finally:
        connection.close()
