"""`sidemesh demo traffic`: a canary walked on this host, for real. v1 → 90/10 → 50/50 → v2,
then retries hiding a faulty version, a timeout, a circuit breaker, outlier ejection, the
ingress gateway and outbound `REGISTRY_ONLY` (a ServiceEntry's host passes, an undeclared one
is refused), each applied as Istio configuration through `sidemesh local apply` and each
outcome measured from inside a client pod (through its sidecar) and checked. The configuration is in
`traffic_script.py`; the runtime, waits and narration are `session.Session`'s.

Every wait is bounded and ends on an observed outcome (a tally showing the new routing), never
on a sleep. The shares are checked with bounds several standard deviations wide.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

from rich.console import Console
from rich.constrain import Constrain
from rich.rule import Rule
from rich.text import Text

from sidemesh.demo import script
from sidemesh.demo import traffic_script as ts
from sidemesh.demo.runner import DECORATION_WIDTH, interrupts_raise
from sidemesh.demo.script import Command, same_command
from sidemesh.demo.session import DemoSettings, Session, StepFailed
from sidemesh.demo.traffic_script import Outcomes, Probe, Tally
from sidemesh.install.naming import mesh_configmap_name
from sidemesh.local.node_ports import NODE_PORT_RANGE, free_node_port

MEASURED_REQUESTS: Final = 1000  # per split: share bounds are > 5 standard deviations wide
SPLIT_90_10_BOUNDS: Final = (5.0, 15.0)  # percent to v2
SPLIT_50_50_BOUNDS: Final = (40.0, 60.0)
POLL_SECONDS: Final = 0.5
STEADY_PROBES: Final = 3  # a refusal counts once this many probes in a row agree
UNPRIVILEGED: Final = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                       "--pdeathsig=TERM")  # fmt: skip


class TrafficDemo(Session):
    def __init__(self, settings: DemoSettings, console: Console) -> None:
        super().__init__(settings, console)
        self.outcomes = Outcomes()
        self.number = 0
        self.node_port = gateway_node_port()

    # --- tools ------------------------------------------------------------------------------

    def step(self, title: str) -> None:
        self.number += 1
        rule = Rule(f"[bold]Step {self.number}: {title}")
        self.console.print(Constrain(rule, DECORATION_WIDTH))

    def apply(self, name: str, objects: list[dict[str, Any]]) -> None:
        self.run(same_command("apply", "-f", str(self.manifest_file(name, objects))))

    def client(self) -> str:
        return self.pod_named(ts.NAMESPACE, "client").name

    def tally(self, path: str, count: int, threads: int = 4) -> Tally:
        """`count` requests to `web` from the client pod, through its sidecar."""
        command = Command(
            (
                "exec",
                "-n",
                ts.NAMESPACE,
                self.client(),
                "-c",
                "client",
                "--",
                "python3",
                "-c",
                ts.TALLY,
                ts.url(path),
                str(count),
                str(threads),
            )
        )
        result = self.run(command, show=False, check=False)
        counted = ts.parse_tally(result.stdout)
        if counted is None:
            raise StepFailed(f"the client's tally failed: {result.stdout}{result.stderr}")
        return counted

    def show(self, what: str, counted: Tally) -> None:
        versions = ", ".join(f"{v} {n}" for v, n in sorted(counted.versions.items())) or "none"
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(counted.status.items()))
        self.console.print(
            Text(f"  {what}: {counted.total} requests; HTTP {statuses}; 200s by {versions}")
        )

    def until(
        self, what: str, path: str, count: int, accept: Callable[[Tally], bool], threads: int = 4
    ) -> Tally:
        """Tally until `accept` (the new configuration reached the client's sidecar)."""
        deadline = time.monotonic() + self.settings.wait_seconds
        while True:
            counted = self.tally(path, count, threads)
            if accept(counted):
                return counted
            if time.monotonic() >= deadline:
                raise StepFailed(f"gave up waiting: {what} (last tally: {counted})")
            time.sleep(POLL_SECONDS)

    def measure_split(self, title: str, v1: int, v2: int) -> float:
        self.step(title)
        self.apply(f"split-{v1}-{v2}.yaml", ts.weighted(v1, v2))
        if v1 and v2:
            low = 30.0 if v2 >= 50 else 0.0
            self.until(
                f"{v2}% to v2 in effect",
                "/",
                50,
                lambda t: t.ok == t.total and t.share("v2") > low and t.share("v1") > 0,
            )
            counted = self.tally("/", MEASURED_REQUESTS, threads=8)
        else:
            only = "v1" if v1 else "v2"
            self.until(
                f"only {only} answering", "/", 20, lambda t: t.versions.get(only, 0) == t.total
            )
            counted = self.tally("/", 100)
        self.show("measured", counted)
        if counted.ok != counted.total:
            raise StepFailed(f"requests failed during the split: {counted}")
        return round(counted.share("v2"), 1)

    # --- the steps --------------------------------------------------------------------------

    def step_setup(self) -> None:
        revision = self.settings.first_revision
        self.step(f"a control plane ({revision}) and the app, injected")
        self.run(Command(("control-plane", "start", "--revision", revision)))
        self.say(
            f"Namespace {ts.NAMESPACE} is labelled istio.io/rev={revision}. Service web has "
            "four versions: v1, v2, a faulty v3 (every other request 503) and a broken one "
            "(always 500)."
        )
        self.apply("app.yaml", ts.app_objects(revision))
        self.say(
            f"And an ingress gateway in {ts.GATEWAY_NAMESPACE}, the host's "
            f"127.0.0.1:{self.node_port} (a NodePort Service)."
        )
        self.apply("gateway.yaml", ts.gateway_objects(revision, self.node_port))
        self.wait_for(
            "every traffic pod 2/2 with a sidecar",
            lambda s: script.rollout_done(s, ts.NAMESPACE, revision=revision),
            lambda s: script.rollout_status(s, ts.NAMESPACE, time.time()),
        )
        self.wait_for(
            "the ingress gateway ready",
            lambda s: any(script.fully_ready(p) for p in script.live_pods(s, ts.GATEWAY_NAMESPACE)),
        )
        self.run(same_command("get", "pods", "-n", ts.NAMESPACE))

    def step_canary(self) -> None:
        v2 = self.measure_split("all traffic to v1", 100, 0)
        if v2 != 0.0:
            raise StepFailed(f"v2 answered {v2}% with every request routed to v1")
        split = self.measure_split("canary: 90% v1, 10% v2", 90, 10)
        self.outcomes.split_v2_percent = split
        if not SPLIT_90_10_BOUNDS[0] <= split <= SPLIT_90_10_BOUNDS[1]:
            raise StepFailed(f"v2 got {split}% of {MEASURED_REQUESTS} requests, not about 10%")
        self.say(f"v2 answered {split}% of {MEASURED_REQUESTS} requests.")
        half = self.measure_split("canary: 50% v1, 50% v2", 50, 50)
        self.outcomes.split_50_v2_percent = half
        if not SPLIT_50_50_BOUNDS[0] <= half <= SPLIT_50_50_BOUNDS[1]:
            raise StepFailed(f"v2 got {half}% of {MEASURED_REQUESTS} requests, not about 50%")
        self.say(f"v2 answered {half}%.")
        if self.measure_split("promote: all traffic to v2", 0, 100) != 100.0:
            raise StepFailed("v1 still answered after the promotion")

    def step_retries(self) -> None:
        self.step("retries hide a faulty version")
        self.apply("retries.yaml", ts.retries())
        self.until(
            "v3 answering, retried",
            "/",
            20,
            lambda t: t.versions.get("v3", 0) == t.total,
            threads=1,
        )
        raw = self.tally("/raw", 100, threads=1)
        self.show("without retries (/raw)", raw)
        retried = self.tally("/", 200, threads=1)
        self.show("with retries: 3 attempts on 5xx", retried)
        self.outcomes.raw_success_rate = raw.ok / raw.total
        self.outcomes.retry_success_rate = retried.ok / retried.total
        if not 0.3 <= raw.ok / raw.total <= 0.7:
            raise StepFailed(f"v3 is not failing about every other request: {raw}")
        if retried.ok / retried.total < 0.99:
            raise StepFailed(f"retries did not hide v3's failures: {retried}")

    def step_timeout(self) -> None:
        self.step(f"a {ts.TIMEOUT} timeout on a {ts.SLOW_SECONDS:.0f} s answer")
        self.apply("timeout.yaml", ts.timeout())
        counted = self.until(
            "the timeout answering 504",
            "/slow",
            1,
            lambda t: t.status.get("504", 0) == 1,
            threads=1,
        )
        self.show("/slow", counted)
        self.outcomes.timeout_ms = counted.max_ms
        if counted.max_ms >= ts.SLOW_SECONDS * 1000:
            raise StepFailed(f"the 504 came after {counted.max_ms} ms, not before the answer")
        self.say(f"504 after {counted.max_ms} ms: the sidecar gave up, the app was still busy.")

    def step_circuit_breaker(self) -> None:
        self.step("a circuit breaker: one connection, one pending request")
        self.apply("breaker.yaml", ts.circuit_breaker())
        counted = self.until(
            "the breaker refusing overflow",
            "/hold",
            20,
            lambda t: t.status.get("503", 0) > 0 and t.ok > 0,
            threads=20,
        )
        self.show("20 requests at once, each held 1 s", counted)
        self.outcomes.breaker_503s = counted.status.get("503", 0)
        self.say(
            f"{self.outcomes.breaker_503s} refused at once with 503 (Envoy's UO, "
            f"{counted.overloaded} marked x-envoy-overloaded), {counted.ok} served."
        )

    def step_ejection(self) -> None:
        self.step("outlier detection ejects the broken endpoint")
        self.apply("outlier.yaml", ts.outlier_detection())
        # Only subset `pool` reaches the broken endpoint: its first 500 shows the subset is in
        # effect (and, with consecutive5xxErrors 1, gets it ejected).
        first = self.until(
            "the broken endpoint answering in subset pool",
            "/",
            10,
            lambda t: t.status.get("500", 0) > 0,
            threads=1,
        )
        self.show("first requests to subset pool (v1 + broken)", first)
        after = self.until(
            "the broken endpoint ejected", "/", 20, lambda t: t.ok == t.total, threads=1
        )
        self.show("then", after)
        self.outcomes.ejected = True
        self.say("After its first 500 the broken endpoint was ejected; v1 serves everything.")

    def step_gateway(self) -> None:
        self.step("in from outside, through the ingress gateway")
        self.apply("ingress.yaml", ts.ingress())
        self.say(f"$ curl -H 'Host: {ts.GATEWAY_HOST}' http://127.0.0.1:{self.node_port}/")
        deadline = time.monotonic() + self.settings.wait_seconds
        while (answer := host_get(self.node_port, ts.GATEWAY_HOST)) != (200, "v1"):
            if time.monotonic() >= deadline:
                raise StepFailed(f"the gateway did not route {ts.GATEWAY_HOST} to v1: {answer}")
            time.sleep(POLL_SECONDS)
        self.outcomes.gateway_ok = True
        self.say(f"200 from web v1: the gateway routed {ts.GATEWAY_HOST} into the mesh.")

    def probe(self, address: str) -> tuple[Probe, Probe]:
        """GETs of the external server from the client pod (through its sidecar): as the
        unknown host, then as the ServiceEntry's host."""
        command = Command(("exec", "-n", ts.NAMESPACE, self.client(), "-c", "client", "--",
                           "python3", "-c", ts.PROBE, ts.external_url(address), ts.UNKNOWN_HOST,
                           ts.EXTERNAL_HOST))  # fmt: skip
        result = self.run(command, show=False, check=False)
        seen = ts.parse_probes(result.stdout)
        if seen is None or len(seen) != 2:
            raise StepFailed(f"the client's probe failed: {result.stdout}{result.stderr}")
        return seen[0], seen[1]

    def probe_until(
        self, what: str, address: str, accept: Callable[[Probe, Probe], bool]
    ) -> tuple[Probe, Probe]:
        """(the unknown host, the ServiceEntry's host) as probed, once `accept` held for
        STEADY_PROBES rounds in a row with the same statuses (a configuration change reaching
        the sidecar can fail a request or two on the way)."""
        deadline = time.monotonic() + self.settings.wait_seconds
        agreed: list[tuple[int, int]] = []
        while True:
            unknown, known = self.probe(address)
            statuses = (unknown.status, known.status)
            if not accept(unknown, known):
                agreed = []
            elif agreed and agreed[-1] != statuses:
                agreed = [statuses]
            else:
                agreed.append(statuses)
            if len(agreed) >= STEADY_PROBES:
                return unknown, known
            if time.monotonic() >= deadline:
                raise StepFailed(f"gave up waiting: {what} (last: {unknown}, {known})")
            time.sleep(POLL_SECONDS)

    def show_probes(self, unknown: Probe, known: Probe) -> None:
        for host, seen in ((ts.UNKNOWN_HOST, unknown), (ts.EXTERNAL_HOST, known)):
            answer = f"HTTP {seen.status}" if seen.status else f"no answer ({seen.error})"
            by = f", served by the {seen.served_by} server" if seen.served_by else ""
            self.console.print(Text(f"  Host: {host}: {answer}{by}"))

    @contextlib.contextmanager
    def external_server(self) -> Iterator[str]:
        """The plain HTTP server on the node (outside the mesh), unprivileged, at the node's
        bridge address; yields that address and stops the server on the way out."""
        network = self.state().network
        address = network.bridge_ip
        argv = ["ip", "netns", "exec", network.node_netns, *UNPRIVILEGED, sys.executable, "-c",
                ts.EXTERNAL_APP, address, str(ts.EXTERNAL_PORT)]  # fmt: skip
        server = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)  # fmt: skip
        try:
            deadline = time.monotonic() + self.settings.wait_seconds
            while True:
                try:
                    status, _ = self.node_get(address, ts.EXTERNAL_PORT, "/")
                except OSError:
                    status = 0
                if status == 200:
                    break
                if server.poll() is not None or time.monotonic() >= deadline:
                    error = server.stderr.read().decode(errors="replace") if server.stderr else ""
                    raise StepFailed(f"the external server did not start: {error[-2000:]}")
                time.sleep(POLL_SECONDS)
            yield address
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            if server.stderr:
                server.stderr.close()

    def step_registry_only(self) -> None:
        self.step("REGISTRY_ONLY: out of the mesh only to hosts it knows")
        with self.external_server() as address:
            self.say(
                f"A plain HTTP server outside the mesh, on the node at {address}:"
                f"{ts.EXTERNAL_PORT}. The client asks it under two names: {ts.EXTERNAL_HOST}, "
                f"declared by a ServiceEntry, and {ts.UNKNOWN_HOST}, declared by nothing."
            )
            self.apply("service-entry.yaml", ts.service_entry(address))
            unknown, known = self.probe_until(
                "both names answered under ALLOW_ANY (the default)",
                address,
                lambda u, k: u.served_externally and k.served_externally,
            )
            self.show_probes(unknown, known)
            revision = self.settings.first_revision
            self.say(f"Now the mesh's outboundTrafficPolicy, in the revision's MeshConfig "
                     f"(ConfigMap {mesh_configmap_name(revision)} in istio-system, key mesh), "
                     "becomes REGISTRY_ONLY.")  # fmt: skip
            self.apply("mesh-registry-only.yaml", ts.mesh_config(revision, "REGISTRY_ONLY"))
            unknown, known = self.probe_until(
                f"{ts.UNKNOWN_HOST} refused, {ts.EXTERNAL_HOST} still served",
                address,
                lambda u, k: u.status != 200 and k.served_externally,
            )
            self.show_probes(unknown, known)
            self.outcomes.registry_only_unknown_status = unknown.status
            self.outcomes.service_entry_status = known.status
            self.outcomes.registry_only_refused = unknown.status != 200 and known.status == 200
            refusal = f"HTTP {unknown.status}" if unknown.status else "the connection closed"
            self.say(f"{ts.UNKNOWN_HOST}: {refusal} from the client's own sidecar; "
                     f"{ts.EXTERNAL_HOST} (the ServiceEntry): {known.status}.")  # fmt: skip
            self.say("And back to ALLOW_ANY.")
            self.apply("mesh-allow-any.yaml", ts.mesh_config(revision, "ALLOW_ANY"))
            self.probe_until(
                f"{ts.UNKNOWN_HOST} served again",
                address,
                lambda u, k: u.served_externally and k.served_externally,
            )
            self.say(f"{ts.UNKNOWN_HOST} is served again.")

    def walk(self) -> Outcomes:
        steps = [
            self.step_setup,
            self.step_canary,
            self.step_retries,
            self.step_timeout,
            self.step_circuit_breaker,
            self.step_ejection,
            self.step_gateway,
            self.step_registry_only,
        ]
        for run_step in steps:
            try:
                run_step()
            except StepFailed as exc:
                self.outcomes.failed_step = f"step {self.number}: {exc}"
                self.console.print(Text(f"step {self.number} failed: {exc}", style="red"))
                return self.outcomes
        for name, reason in ts.NOT_MEASURED.items():
            if self.outcomes.as_value(name) is None:
                self.console.print(Text(f"- {name}: {reason}", style="dim"))
        self.outcomes.ok = True
        return self.outcomes


def gateway_node_port() -> int:
    """A NodePort-range port free on the host's loopback now (the gateway's)."""
    port = free_node_port(NODE_PORT_RANGE.start + os.getpid() % len(NODE_PORT_RANGE))
    if port is None:
        raise StepFailed("no free port in the NodePort range 30000-32767")
    return port


def host_get(port: int, host: str) -> tuple[int, str | None] | str:
    """GET / from this host with `Host: host`: (status, version answered), or the error."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/", headers={"Host": host})
        reply = connection.getresponse()
        body = reply.read()
    except OSError as exc:
        return repr(exc)
    finally:
        connection.close()
    try:
        version = json.loads(body).get("version")
    except (ValueError, AttributeError):
        version = None
    return reply.status, version


def run_traffic_demo(settings: DemoSettings, console: Console) -> Outcomes:
    """The walk; always cleans up (`local down`) unless `keep` and it finished."""
    demo = TrafficDemo(settings, console)
    finished = False
    try:
        with interrupts_raise():
            outcomes = demo.walk()
            finished = outcomes.ok
            return outcomes
    finally:
        if not (finished and settings.keep):
            with contextlib.suppress(KeyboardInterrupt):
                demo.cleanup(show=False)
        shutil.rmtree(demo.work_dir, ignore_errors=True)
