"""Running the demo: each step's commands through `sidemesh local` (as a user would type them),
narrated with rich, and each step's outcome checked against the runtime's state.

Every wait is bounded; a step whose outcome is wrong fails the demo (and the exit code).
Cleanup (`sidemesh local down`) runs on the way out, also after Ctrl-C or SIGTERM, unless
`keep` is set and the demo got to its end.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
import yaml
from rich.console import Console
from rich.panel import Panel
from rich.rule import Rule
from rich.text import Text

from sidemesh.api import names
from sidemesh.cli.proxy_status import render_table
from sidemesh.demo import script
from sidemesh.demo.script import Command, same_command
from sidemesh.local import network
from sidemesh.local.daemon import sidemesh_command
from sidemesh.local.model import PodRecord, State
from sidemesh.local.naming import runtime_prefix
from sidemesh.local.netns import connect_in_netns
from sidemesh.local.store import Store

COMMAND_TIMEOUT_SECONDS = 180.0
POLL_SECONDS = 0.5


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
class StepOutcome:
    number: int
    title: str
    ok: bool
    facts: dict[str, Any] = field(default_factory=dict)
    error: str = ""


Observer = Callable[["Demo", StepOutcome], None]


@dataclass
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


class Demo:
    def __init__(
        self, settings: DemoSettings, console: Console, observe: Observer | None = None
    ) -> None:
        self.settings = settings
        self.console = console
        self.observe = observe
        self.store = Store(settings.state_dir)
        self.outcomes: list[StepOutcome] = []
        self.work_dir = Path(tempfile.mkdtemp(prefix="sidemesh-demo-"))
        self.sidemesh = sidemesh_command()[0]

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

    def wait_for(self, what: str, done: Callable[[State], bool]) -> float:
        """Seconds until `done(state)` held; StepFailed after the bounded wait."""
        started = time.monotonic()
        deadline = started + self.settings.wait_seconds
        while True:
            if self.store.exists() and done(self.state()):
                return time.monotonic() - started
            if time.monotonic() >= deadline:
                raise StepFailed(
                    f"gave up after {self.settings.wait_seconds:.0f} s waiting: {what}"
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

    def fetch(self, namespace: str, pod: str, url: str, *, show: bool) -> CommandResult:
        """A request from inside a pod's app container (so through its sidecar, if any)."""
        return self.run(
            script.fetch_command(namespace, pod, url),
            show=show,
            check=False,
        )

    def fetch_until(
        self, namespace: str, pod: str, url: str, accept: Callable[[CommandResult], bool]
    ) -> CommandResult:
        """Retry quietly (configuration takes a moment to reach the sidecars), then show the
        accepted attempt (or the last one)."""
        deadline = time.monotonic() + self.settings.wait_seconds
        while True:
            result = self.fetch(namespace, pod, url, show=False)
            if accept(result) or time.monotonic() >= deadline:
                return self.fetch(namespace, pod, url, show=True) if accept(result) else result
            time.sleep(1.0)

    def syncz(self, revision: str) -> list[dict[str, Any]]:
        """The sidecars connected to `revision`'s control plane (its `/debug/syncz`)."""
        rows: list[dict[str, Any]] = []
        state = self.state()
        for pod in script.control_plane_pods(state, revision):
            if not pod.pod_ip:
                continue
            sock = connect_in_netns(
                state.network.node_netns, pod.pod_ip, names.PORT_MONITORING, 5.0
            )
            with sock:
                sock.sendall(b"GET /debug/syncz HTTP/1.0\r\nHost: istiod\r\n\r\n")
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
            _, _, body = data.partition(b"\r\n\r\n")
            rows += orjson.loads(body)
        return rows

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

    # --- the steps --------------------------------------------------------------------------

    def step(self, number: int, title: str) -> StepOutcome:
        self.console.print(Rule(f"[bold]Step {number}: {title}"))
        return StepOutcome(number=number, title=title, ok=False)

    def step_control_plane(self) -> StepOutcome:
        revision = self.settings.first_revision
        outcome = self.step(1, f"a control plane of revision {revision}")
        self.say("Install a control plane. It runs in istio-system, labelled with its revision.")
        self.run(Command(("control-plane", "start", "--revision", revision)))
        self.say("Find the revision label, as the guide does:")
        self.run(
            same_command("get", "pods", "-n", "istio-system", "-l", "app=istiod", "--show-labels")
        )
        pods = script.control_plane_pods(self.state(), revision)
        outcome.facts["pods"] = script.pod_summary(pods)
        if not pods or not all(script.fully_ready(p) for p in pods):
            raise StepFailed(f"no ready control-plane pod labelled istio.io/rev={revision}")
        outcome.ok = True
        return outcome

    def step_app(self) -> StepOutcome:
        outcome = self.step(2, "the demo app, before injection")
        self.say("Apply the app. Injection is off by default: namespace `demo` has no label.")
        self.run(same_command("apply", "-f", str(self.settings.manifest)))
        self.wait_for(
            "the demo pods ready without a sidecar",
            lambda s: script.rollout_done(s, script.NAMESPACE, revision=None),
        )
        self.run(same_command("get", "pods", "-n", script.NAMESPACE))
        outcome.facts["pods"] = script.pod_summary(script.live_pods(self.state(), "demo"))
        outcome.ok = True
        return outcome

    def restart(self, revision: str) -> float:
        """`rollout restart` and the bare pods' `delete pod --all`; seconds until 2/2."""
        started = time.monotonic()
        self.run(same_command("rollout", "restart", "deployment", "-n", script.NAMESPACE))
        self.wait_for(
            f"every demo pod 2/2 with the {revision} sidecar",
            lambda s: script.rollout_done(s, script.NAMESPACE, revision=revision),
        )
        return time.monotonic() - started

    def label(self, revision: str) -> None:
        self.run(
            same_command(
                "label",
                "namespace",
                script.NAMESPACE,
                "istio-injection-",
                f"{names.LABEL_REVISION}={revision}",
                "--overwrite",
            )
        )

    def step_inject(self) -> StepOutcome:
        revision = self.settings.first_revision
        outcome = self.step(3, f"label the namespace with {revision} and restart")
        self.label(revision)
        self.say("Restart the workloads so that the webhook injects them (bare pods: ")
        self.say(f"`kubectl delete pod -n {script.NAMESPACE} --all`; this app has none).")
        outcome.facts["restart_to_ready_s"] = self.restart(revision)
        self.run(same_command("get", "pods", "-n", script.NAMESPACE))
        pods = script.live_pods(self.state(), script.NAMESPACE)
        outcome.facts["pods"] = script.pod_summary(pods)
        outcome.facts["sidecar_rss_bytes"] = self.sidecar_memory(pods[0])
        self.say(
            f"Sidecar memory (agent + Envoy) in {pods[0].name}: "
            f"{outcome.facts['sidecar_rss_bytes'] / 2**20:.0f} MiB"
        )
        outcome.ok = True
        return outcome

    def step_mtls(self) -> StepOutcome:
        outcome = self.step(4, "mutual TLS between the sidecars; STRICT refuses plaintext")
        client = self.pod_named(script.NAMESPACE, "client").name
        self.say("client -> frontend -> backend; the backend reports who called it:")
        result = self.fetch_until(
            script.NAMESPACE,
            client,
            "http://frontend/backend",
            lambda r: r.returncode == 0 and (script.caller_in(r.stdout) or "").startswith("spiffe"),
        )
        caller = script.caller_in(result.stdout)
        outcome.facts["caller"] = caller
        if not caller or not caller.startswith(f"spiffe://cluster.local/ns/{script.NAMESPACE}/"):
            raise StepFailed(f"the backend saw no mesh identity: {result.stdout}{result.stderr}")
        self.say(f"The backend saw {caller}: the frontend's sidecar identity, over mTLS.")
        self.say("A client outside the mesh (namespace without injection):")
        self.run(
            same_command(
                "apply", "-f", str(self.manifest_file("outside.yaml", script.outside_objects()))
            )
        )
        self.wait_for(
            "the outside client running",
            lambda s: any(script.fully_ready(p) for p in script.live_pods(s, "outside")),
        )
        url = f"http://backend.{script.NAMESPACE}/"
        before = self.fetch_until(
            script.OUTSIDE_NAMESPACE, script.OUTSIDE_POD, url, lambda r: r.returncode == 0
        )
        outcome.facts["plaintext_before_strict"] = before.returncode == 0
        self.say("Accepted (PERMISSIVE, the default), with no caller identity. Now STRICT:")
        policy = self.manifest_file("strict.yaml", [script.strict_policy(script.NAMESPACE)])
        self.run(same_command("apply", "-f", str(policy)))
        refused = self.fetch_until(
            script.OUTSIDE_NAMESPACE,
            script.OUTSIDE_POD,
            url,
            lambda r: r.returncode != 0 and script.refusal_in(r.stderr) is not None,
        )
        outcome.facts["plaintext_refusal"] = script.refusal_in(refused.stderr)
        if outcome.facts["plaintext_refusal"] is None:
            raise StepFailed(f"STRICT did not refuse plaintext: {refused.stdout}{refused.stderr}")
        self.say("Refused. In the mesh, traffic still flows:")
        again = self.fetch_until(
            script.NAMESPACE, client, "http://frontend/backend", lambda r: r.returncode == 0
        )
        outcome.facts["caller_under_strict"] = script.caller_in(again.stdout)
        if outcome.facts["caller_under_strict"] != caller:
            raise StepFailed(f"in-mesh traffic failed under STRICT: {again.stderr}")
        outcome.ok = True
        return outcome

    def step_upgrade(self) -> StepOutcome:
        old, new = self.settings.first_revision, self.settings.second_revision
        outcome = self.step(5, f"upgrade: {old} -> {new}")
        self.run(Command(("control-plane", "start", "--revision", new)))
        self.run(
            same_command("get", "pods", "-n", "istio-system", "-l", "app=istiod", "--show-labels")
        )
        self.label(new)
        outcome.facts["restart_to_ready_s"] = self.restart(new)
        self.run(same_command("get", "pods", "-n", script.NAMESPACE))
        pods = script.live_pods(self.state(), script.NAMESPACE)
        outcome.facts["pods"] = script.pod_summary(pods)
        self.say("Each pod's sidecar.istio.io/status names its revision:")
        for pod in pods:
            self.console.print(f"  {pod.name}: {script.sidecar_revision(pod)}")
        self.console.print()
        counts: dict[str, int] = {}
        for revision in (old, new):
            if revision == old:
                self.wait_for(
                    f"{old} serving no sidecar",
                    lambda _s: script.connected_proxies(self.syncz(old)) == 0,
                )
            rows = self.syncz(revision)
            counts[revision] = script.connected_proxies(rows)
            self.console.print(
                Text(f"$ istioctl proxy-status --revision {revision}", style="bold cyan")
            )
            table = render_table(rows) if rows else "(no connected proxies)"
            self.console.print(Text(table), soft_wrap=True)
            self.console.print()
        outcome.facts["connected"] = counts
        if counts[old] != 0 or counts[new] != len(pods):
            raise StepFailed(f"connected sidecars per revision: {counts}")
        self.say(f"{old} serves nothing now: stop it; traffic still flows.")
        self.run(Command(("control-plane", "stop", "--revision", old)))
        client = self.pod_named(script.NAMESPACE, "client").name
        after = self.fetch_until(
            script.NAMESPACE, client, "http://frontend/backend", lambda r: r.returncode == 0
        )
        outcome.facts["caller_after_upgrade"] = script.caller_in(after.stdout)
        if not outcome.facts["caller_after_upgrade"]:
            raise StepFailed(f"traffic failed after the upgrade: {after.stderr}")
        outcome.ok = True
        return outcome

    def step_cleanup(self) -> StepOutcome:
        outcome = self.step(6, "clean up")
        self.cleanup(show=True)
        left = leftovers(self.settings.state_dir)
        outcome.facts["leftovers"] = left
        if left:
            raise StepFailed(f"left behind: {left}")
        outcome.ok = True
        return outcome

    def cleanup(self, *, show: bool) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.run(Command(("down",)), show=show, check=False)

    # --- the whole walk ---------------------------------------------------------------------

    def walk(self) -> list[StepOutcome]:
        steps = [
            self.step_control_plane,
            self.step_app,
            self.step_inject,
            self.step_mtls,
            self.step_upgrade,
        ]
        if not self.settings.keep:
            steps.append(self.step_cleanup)
        for number, run_step in enumerate(steps, start=1):
            try:
                outcome = run_step()
            except StepFailed as exc:
                outcome = StepOutcome(number, run_step.__name__, ok=False, error=str(exc))
                self.console.print(Panel(str(exc), title=f"step {number} failed", style="red"))
            self.outcomes.append(outcome)
            if self.observe is not None:
                self.observe(self, outcome)
            if not outcome.ok:
                break
        return self.outcomes


def leftovers(state_dir: Path) -> list[str]:
    """What of a runtime is still here: its network namespaces, its state directory."""
    prefix = runtime_prefix(state_dir)
    found = [f"netns {n}" for n in network.list_netns() if n.startswith(prefix)]
    if state_dir.exists():
        found.append(f"directory {state_dir}")
    return found


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """SIGTERM behaves as Ctrl-C (KeyboardInterrupt), so `finally` cleans up either way."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_demo(
    settings: DemoSettings, console: Console, observe: Observer | None = None
) -> list[StepOutcome]:
    """The walk-through; cleans up unless `keep` and it finished. Raises KeyboardInterrupt
    after cleaning up when interrupted."""
    demo = Demo(settings, console, observe)
    finished = False
    try:
        with interrupts_raise():
            outcomes = demo.walk()
            finished = True
            return outcomes
    finally:
        failed = not finished or not all(o.ok for o in demo.outcomes)
        if failed or not settings.keep:
            if failed:
                console.print(Text("cleaning up ...", style="yellow"))
            with contextlib.suppress(KeyboardInterrupt):
                demo.cleanup(show=False)
        with contextlib.suppress(OSError):
            for path in demo.work_dir.iterdir():
                path.unlink()
            demo.work_dir.rmdir()


def report(outcomes: list[StepOutcome]) -> str:
    return json.dumps(
        [{"step": o.number, "title": o.title, "ok": o.ok, "error": o.error} for o in outcomes]
    )


def environment_problems() -> list[str]:
    from sidemesh.local.preflight import missing_requirements

    return missing_requirements()


__all__ = [
    "Demo",
    "DemoSettings",
    "StepFailed",
    "StepOutcome",
    "environment_problems",
    "leftovers",
    "report",
    "run_demo",
]
