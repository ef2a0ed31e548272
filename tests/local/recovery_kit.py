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
"""

from __future__ import annotations

import io
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from sidemesh.api import names
from sidemesh.demo import script
from sidemesh.demo.script import Command, same_command
from sidemesh.demo.session import DemoSettings, Session

MANIFEST = Path(__file__).resolve().parents[2] / "examples" / "demo" / "demo.yaml"
REVISION = "recovery-1"
NAMESPACE = script.NAMESPACE
MESHED_PODS = 4
POLL_SECONDS = 0.1
FRONTEND_URL = f"http://frontend.{NAMESPACE}.svc.cluster.local/"

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
