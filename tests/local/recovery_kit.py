"""A meshed app under steady traffic whose control plane gets restarted, on the local runtime.

Shared by `test_local_recovery.py` and `benchmarks/recovery.py`. It drives the runtime through
`sidemesh local` as the demo does (`sidemesh.demo.session.Session`): a control plane, the demo
app (4 pods: backend x2, frontend, client) in a namespace labelled for injection, and a
traffic loop running in the client pod (client -> frontend -> backend, through 4 sidecars)
that prints one line per request until its stdin closes.

A control-plane restart is `delete pod` of the istiod pod (its Deployment makes a new one, with
a new pod address; the sidecars keep dialling the Service name). It is timed from the new pod
being Ready in the runtime's state to every sidecar being SYNCED in its `/debug/syncz` (what
`sidemesh proxy-status` shows).

The app counts as started once every sidecar knows every ready endpoint of the app's Services
(`all_routed`), not merely once every pod is 2/2 and every sidecar SYNCED: the control plane
reads the runtime's registry on its own schedule (a file polled each second), so for up to a
second after the last pod turns Ready the sidecars are SYNCED to a snapshot without it and a
client's sidecar answers 503 "no healthy upstream" (what Kubernetes' endpoint propagation does
too). Traffic begun then would count those 503s against the control-plane restart.
"""

from __future__ import annotations

import io
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml
from rich.console import Console

from sidemesh.agent.readiness import parse_stats
from sidemesh.api import names
from sidemesh.demo import script
from sidemesh.demo.script import Command, same_command
from sidemesh.demo.session import DemoSettings, Session, http_get
from sidemesh.local import services
from sidemesh.local.model import PodRecord, State
from sidemesh.local.netns import connect_in_netns
from sidemesh.xds.resource_names import outbound_cluster_name

MANIFEST = Path(__file__).resolve().parents[2] / "examples" / "demo" / "demo.yaml"
REVISION = "recovery-1"
NAMESPACE = script.NAMESPACE
MESHED_PODS = 4
POLL_SECONDS = 0.1
CONNECT_SECONDS = 5.0
FRONTEND_HOST = f"frontend.{NAMESPACE}.svc.{services.CLUSTER_DOMAIN}"
FRONTEND_URL = f"http://{FRONTEND_HOST}/"
ADMIN_HOST = "127.0.0.1"  # Envoy's admin, inside each pod (the runtime's pods are IPv4)
HEALTHY_MEMBERS = ".membership_healthy"
MEMBERS_PATH = "/stats?filter=" + quote(r"^cluster\.outbound\|.*\.membership_healthy$", safe="")

# One request every 50 ms until stdin closes; a line per request ("ok" or "fail <error>").
TRAFFIC = """\
import sys, threading, time, urllib.request
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
while not stop.is_set():
    try:
        urllib.request.urlopen(sys.argv[1], timeout=5).read()
        print("ok", flush=True)
    except Exception as error:
        print("fail", repr(error), flush=True)
    stop.wait(0.05)
"""


def all_synced(rows: Sequence[Mapping[str, Any]], expected: int) -> bool:
    """`expected` sidecars connected, each with every type it was sent SYNCED (at least
    clusters and listeners)."""
    if len(rows) != expected:
        return False
    for row in rows:
        types = row.get("types") or {}
        if not {"cds", "lds"} <= set(types):
            return False
        if any(state.get("status") != "SYNCED" for state in types.values()):
            return False
    return True


def ready_endpoints(state: State) -> dict[str, int]:
    """Every outbound cluster of the app's Services → how many ready pods back it."""
    pods = list(state.pods.values())
    wanted: dict[str, int] = {}
    for service in state.services.values():
        if service.namespace != NAMESPACE:
            continue
        ready = sum(1 for endpoint in services.endpoints(service, pods) if endpoint.ready)
        host = f"{service.name}.{service.namespace}.svc.{services.CLUSTER_DOMAIN}"
        for port in services.service_ports(service):
            wanted[outbound_cluster_name(port.port, host)] = ready
    return wanted


def healthy_members(stats_text: str) -> dict[str, int]:
    """Envoy's `/stats` lines `cluster.<name>.membership_healthy: N` → {name: N}."""
    return {
        name.removeprefix("cluster.").removesuffix(HEALTHY_MEMBERS): value
        for name, value in parse_stats(stats_text).items()
        if name.startswith("cluster.") and name.endswith(HEALTHY_MEMBERS)
    }


def all_routed(members: Iterable[Mapping[str, int]], wanted: Mapping[str, int]) -> bool:
    """Every sidecar (its healthy members per cluster) has each cluster's ready endpoints."""
    return all(
        sidecar.get(cluster, 0) == count for sidecar in members for cluster, count in wanted.items()
    )


@dataclass
class Traffic:
    """The request loop in the client pod; counts what it printed."""

    process: subprocess.Popen[str]
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None

    def start_reading(self) -> None:
        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                if line.startswith("ok"):
                    self.ok += 1
                elif line.startswith("fail"):
                    self.failures.append(line.strip())

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()

    def wait_for_requests(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.ok < count:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(
                    f"traffic: {self.ok} requests answered, {len(self.failures)} failed "
                    f"({self.failures[-3:]}); exit status {self.process.poll()}"
                )
            time.sleep(POLL_SECONDS)

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self._reader is not None:
            self._reader.join(10)


class RecoveryMesh:
    """One runtime (its own state directory), the meshed demo app, the traffic loop."""

    def __init__(self, state_dir: Path, *, wait_seconds: float = 180.0) -> None:
        self.session = Session(
            DemoSettings(state_dir=state_dir, manifest=MANIFEST, wait_seconds=wait_seconds),
            Console(file=io.StringIO(), width=200),
        )

    def local(self, *args: str) -> str:
        return self.session.run(Command(args), show=False).stdout

    def start(self) -> None:
        """Control plane, then the app in a namespace already labelled for it (one rollout)."""
        self.local("control-plane", "start", "--revision", REVISION)
        documents = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
        for document in documents:
            if document["kind"] == "Namespace":
                document["metadata"]["labels"] = {names.LABEL_REVISION: REVISION}
        path = self.session.manifest_file("app.yaml", documents)
        self.session.run(same_command("apply", "-f", str(path)), show=False)
        self.session.wait_for(
            "every demo pod 2/2",
            lambda s: script.rollout_done(s, NAMESPACE, revision=REVISION),
            lambda s: script.rollout_status(s, NAMESPACE, time.time()),
        )
        self.wait_synced(self.session.settings.wait_seconds)
        self.wait_routed(self.session.settings.wait_seconds)

    def meshed_pods(self) -> list[PodRecord]:
        return script.live_pods(self.session.state(), NAMESPACE)

    def sidecar_get(self, pod: PodRecord, path: str) -> tuple[int, bytes]:
        """GET from the pod's Envoy admin (loopback inside the pod). OSError when it fails."""
        sock = connect_in_netns(
            pod.netns or "", ADMIN_HOST, names.PORT_ENVOY_ADMIN, CONNECT_SECONDS
        )
        return http_get(sock, ADMIN_HOST, path)

    def sidecar_members(self) -> list[dict[str, int]]:
        """Each meshed sidecar's healthy members per outbound cluster ({} if it cannot say)."""
        found = []
        for pod in self.meshed_pods():
            try:
                status, body = self.sidecar_get(pod, MEMBERS_PATH)
            except OSError:
                status, body = 0, b""
            found.append(healthy_members(body.decode()) if status == 200 else {})
        return found

    def wait_routed(self, timeout: float) -> None:
        """Until every sidecar has every ready endpoint of the app's Services."""
        deadline = time.monotonic() + timeout
        while not all_routed(self.sidecar_members(), ready_endpoints(self.session.state())):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"sidecars lack ready endpoints after {timeout:.0f} s: want "
                    f"{ready_endpoints(self.session.state())}, have {self.sidecar_members()}"
                )
            time.sleep(POLL_SECONDS)

    def request_from_client(self) -> tuple[int, bytes]:
        """One GET of the frontend from the client pod's network namespace (not as the proxy's
        uid, so through the client's sidecar, as the app's requests go): status and body."""
        state = self.session.state()
        client = self.session.pod_named(NAMESPACE, "client")
        (frontend,) = [s for s in state.services.values()
                       if s.namespace == NAMESPACE and s.name == "frontend"]  # fmt: skip
        assert frontend.cluster_ip is not None
        port = services.service_ports(frontend)[0].port
        sock = connect_in_netns(client.netns or "", frontend.cluster_ip, port, CONNECT_SECONDS)
        return http_get(sock, FRONTEND_HOST, "/")

    def control_plane_pod(self) -> str | None:
        """The name of the ready control-plane pod, if there is one."""
        pods = script.control_plane_pods(self.session.state(), REVISION)
        ready = [p.name for p in pods if script.fully_ready(p)]
        return ready[0] if len(ready) == 1 else None

    def sync_rows(self) -> list[dict[str, Any]]:
        try:
            return self.session.syncz(REVISION)
        except (OSError, ValueError):
            return []  # not listening yet, or gone

    def wait_synced(self, timeout: float) -> float:
        """Seconds until every sidecar is SYNCED with the control plane."""
        started = time.monotonic()
        while not all_synced(self.sync_rows(), MESHED_PODS):
            if time.monotonic() - started > timeout:
                raise TimeoutError(
                    f"sidecars not all SYNCED after {timeout:.0f} s: {self.sync_summary()}"
                )
            time.sleep(POLL_SECONDS)
        return time.monotonic() - started

    def sync_summary(self) -> str:
        rows = self.sync_rows()
        shown = [
            f"{r.get('pod')}: " + ",".join(f"{t}={s.get('status')}" for t, s in r["types"].items())
            for r in rows
        ]
        return f"{len(rows)} connected; " + "; ".join(shown)

    def restart_control_plane(self, timeout: float, *, outage: float = 0.0) -> float:
        """Restart the control plane; seconds from the new pod being Ready to every sidecar
        SYNCED with it.

        Without `outage`: `delete pod` (the Deployment starts a replacement at once). With
        it: `control-plane stop`, `outage` seconds with no control plane at all, then
        `control-plane start` (a longer outage, as when istiod crash-loops or is reinstalled).
        """
        old = self.control_plane_pod()
        assert old is not None, "no ready control-plane pod"
        if outage > 0:
            self.local("control-plane", "stop", "--revision", REVISION)
            time.sleep(outage)  # the outage itself is the scenario, not a wait for an event
            self.local("control-plane", "start", "--revision", REVISION, "--no-wait")
        else:
            self.local("delete", "pod", "-n", names.CONTROL_PLANE_NAMESPACE, old, "--no-wait")
        deadline = time.monotonic() + timeout
        while self.control_plane_pod() in (None, old):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no new control-plane pod ready after {timeout:.0f} s")
            time.sleep(POLL_SECONDS)
        return self.wait_synced(max(1.0, deadline - time.monotonic()))

    def start_traffic(self) -> Traffic:
        client = self.session.pod_named(NAMESPACE, "client")
        argv = [*self.session.sidemesh, "local", "--state-dir", str(self.session.store.directory)]
        argv += ["exec", "-n", NAMESPACE, client.name, "-c", "client", "--"]
        argv += ["python3", "-u", "-c", TRAFFIC, FRONTEND_URL]
        process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        traffic = Traffic(process)
        traffic.start_reading()
        return traffic

    def close(self) -> None:
        self.session.cleanup(show=False)
