"""Running the demo: each step's commands through `sidemesh local` (as a user would type them),
narrated with rich, and each step's outcome checked against the runtime's state.

Every wait is bounded; a step whose outcome is wrong fails the demo (and the exit code).
Cleanup (`sidemesh local down`) runs on the way out, also after Ctrl-C or SIGTERM, unless
`keep` is set and the demo got to its end.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.constrain import Constrain
from rich.panel import Panel
from rich.rule import Rule
from rich.text import Text

from sidemesh.api import names
from sidemesh.demo import demo_report, script
from sidemesh.demo.demo_report import StepOutcome
from sidemesh.demo.demo_steps import LaterSteps
from sidemesh.demo.script import Command, same_command
from sidemesh.demo.session import DemoSettings, StepFailed
from sidemesh.local import network
from sidemesh.local.naming import runtime_prefix

Observer = Callable[["Demo", StepOutcome], None]
DECORATION_WIDTH = 80  # rules and panels; the text itself is never wrapped


class Demo(LaterSteps):
    """The guide's steps, each checked against the runtime's state."""

    def __init__(
        self, settings: DemoSettings, console: Console, observe: Observer | None = None
    ) -> None:
        super().__init__(settings, console)
        self.observe = observe
        self.outcomes: list[StepOutcome] = []
        self.current: StepOutcome | None = None  # the step running, its facts as they come

    # --- the steps --------------------------------------------------------------------------

    def step(self, number: int, title: str) -> StepOutcome:
        self.console.print(Constrain(Rule(f"[bold]Step {number}: {title}"), DECORATION_WIDTH))
        self.current = StepOutcome(number=number, title=title, ok=False)
        return self.current

    def step_control_plane(self) -> StepOutcome:
        revision = self.settings.first_revision
        outcome = self.step(script.STEP_CONTROL_PLANE, f"a control plane of revision {revision}")
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
        outcome = self.step(script.STEP_APP, "the demo app, before injection")
        self.say("Apply the app. Injection is off by default: namespace `demo` has no label.")
        self.run(same_command("apply", "-f", str(self.settings.manifest)))
        self.wait_for(
            "the demo pods ready without a sidecar",
            lambda s: script.rollout_done(s, script.NAMESPACE, revision=None),
            lambda s: script.rollout_status(s, script.NAMESPACE, time.time()),
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
            lambda s: script.rollout_status(s, script.NAMESPACE, time.time()),
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
        outcome = self.step(script.STEP_INJECT, f"label the namespace with {revision} and restart")
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
        outcome = self.step(
            script.STEP_MTLS, "mutual TLS between the sidecars; STRICT refuses plaintext"
        )
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
        outcome = self.step(script.STEP_UPGRADE, f"upgrade: {old} -> {new}")
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
            self.run(script.proxy_status_command(revision))
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

    def step_authz(self) -> StepOutcome:
        outcome = self.step(script.STEP_AUTHZ, "authorization by identity: 403 and 200")
        self.authorize(outcome.facts)
        outcome.ok = True
        return outcome

    def step_signals(self) -> StepOutcome:
        outcome = self.step(script.STEP_SIGNALS, "golden signals of the demo's traffic")
        self.measure_signals(outcome.facts)
        outcome.ok = True
        return outcome

    def step_cleanup(self) -> StepOutcome:
        outcome = self.step(script.STEP_CLEANUP, "clean up")
        self.cleanup(show=True)
        left = leftovers(self.settings.state_dir)
        outcome.facts["leftovers"] = left
        if left:
            raise StepFailed(f"left behind: {left}")
        outcome.ok = True
        return outcome

    # --- the whole walk ---------------------------------------------------------------------

    def walk(self) -> list[StepOutcome]:
        steps = [
            self.step_control_plane,
            self.step_app,
            self.step_inject,
            self.step_mtls,
            self.step_upgrade,
            self.step_authz,  # after the upgrade: its restart would reset the counters
            self.step_signals,
        ]
        if not self.settings.keep:
            steps.append(self.step_cleanup)
        for number, run_step in enumerate(steps, start=1):
            self.current = None
            try:
                outcome = run_step()
            except StepFailed as exc:
                outcome = self.failed(number, run_step.__name__, exc)
                panel = Panel(Text(str(exc)), title=f"step {number} failed", style="red")
                self.console.print(Constrain(panel, DECORATION_WIDTH))
            self.outcomes.append(outcome)
            if self.observe is not None:
                self.observe(self, outcome)
            if not outcome.ok:
                break
        if all(o.ok for o in self.outcomes):
            self.summarize()
        return self.outcomes

    def failed(self, number: int, name: str, exc: StepFailed) -> StepOutcome:
        """The step that raised, with the facts it had gathered until then."""
        outcome = self.current
        if outcome is None or outcome.number != number:
            outcome = StepOutcome(number, name, ok=False)
        outcome.ok, outcome.error = False, str(exc)
        return outcome

    def summarize(self) -> None:
        """What the run proved, a line per check that passed."""
        self.console.print(Constrain(Rule("[bold]What this run showed"), DECORATION_WIDTH))
        facts = {o.number: o.facts for o in self.outcomes if o.ok}
        first, second = self.settings.first_revision, self.settings.second_revision
        for line in script.proven(facts, first=first, second=second):
            self.console.print(Text(f"✓ {line}", style="green"))
        if script.STEP_SIGNALS in facts:
            self.console.print()
            self.show_signals(facts[script.STEP_SIGNALS]["edges"])


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


def report(outcomes: list[StepOutcome], settings: DemoSettings) -> dict[str, Any]:
    """`sidemesh demo --json`'s object: every check's outcome."""
    return demo_report.checks(outcomes, second_revision=settings.second_revision)


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
