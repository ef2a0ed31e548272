"""One container of a running pod: its process, its restarts, its probes, its logs.

The process is `ip netns exec <pod netns> python -m sidemesh.local.launch <spec>`, which
becomes the container's command (same pid, its own session, so a signal reaches everything it
started). Output goes to `logs/<container>/<restart>.log` in the pod's directory. Restarts
follow the kubelet: the first at once, then after 10 s, 20 s, 40 s ... at most 300 s
(`CrashLoopBackOff`), the back-off forgotten after 10 minutes of running. Each restart after a
failure is a Warning event of the pod (`Restarting`, then the kubelet's `BackOff`) and counts in
its RESTARTS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sidemesh.local.env import (
    DEFAULT_PATH,
    EnvError,
    PodFacts,
    is_sidemesh_image,
    resolve_argv,
    resolve_env,
)
from sidemesh.local.model import ContainerStatus
from sidemesh.local.privileges import PrivilegeError, container_privileges
from sidemesh.local.probes import ProbeSettings, run_handler
from sidemesh.local.volumes import Lookup, VolumeError, container_mounts

BACKOFF_START = 10.0
BACKOFF_CAP = 300.0
BACKOFF_RESET_AFTER = 600.0
LOGS_KEPT = 2  # the current log and the previous one (`logs --previous`)
HOST_PRIVATE = ("/root",)  # the host administrator's home: kubeconfigs, SSH keys

Kind = Literal["init", "sidecar", "regular"]


@dataclass
class PodContext:
    """What every container of one pod shares."""

    netns: str
    pod_dir: Path
    facts: PodFacts
    volumes: list[dict[str, Any]]
    volume_paths: dict[str, Path]
    security: dict[str, Any]  # the pod's securityContext
    python: str
    launcher_env: dict[str, str]
    sidemesh_argv: list[str]
    sidemesh_bin: str
    expose: list[str]
    config_maps: Lookup
    secrets: Lookup
    ensure_mount_point: Callable[[str, bool], None]
    changed: Callable[[], None]
    event: Callable[[str, str, str], None]  # type, reason, message
    clock: Callable[[], float]


class ContainerRunner:
    def __init__(self, pod: PodContext, spec: dict[str, Any], status: ContainerStatus, kind: Kind):
        self.pod = pod
        self.spec = spec
        self.status = status
        self.kind = kind
        self.name = str(spec.get("name"))
        self.process: asyncio.subprocess.Process | None = None
        self.stopping = False
        self._stopped = asyncio.Event()
        self._probe_task: asyncio.Task[None] | None = None
        self._kill_task: asyncio.Task[None] | None = None
        self.first_start = asyncio.Event()  # set once the first start attempt is over

    # --- the launch spec ------------------------------------------------------------------

    def launch_spec(self) -> dict[str, Any]:
        security = {**self.pod.security, **(self.spec.get("securityContext") or {})}
        privileges = container_privileges(security)
        env = resolve_env(
            self.spec, self.pod.facts, config_maps=self.pod.config_maps, secrets=self.pod.secrets
        )
        is_sidemesh = not self.spec.get("command") and is_sidemesh_image(
            str(self.spec.get("image") or "")
        )
        if is_sidemesh and not any(e.get("name") == "PATH" for e in self.spec.get("env") or []):
            env["PATH"] = f"{self.pod.sidemesh_bin}:{DEFAULT_PATH}"
        uid = security.get("runAsUser")
        env.setdefault("HOME", "/root" if uid in (None, 0) else "/")
        mounts = container_mounts(self.spec, self.pod.volumes, self.pod.volume_paths)
        for mount in mounts:
            self.pod.ensure_mount_point(mount["target"], Path(mount["source"]).is_dir())
        groups = [int(g) for g in self.pod.security.get("supplementalGroups") or []]
        if self.pod.security.get("fsGroup") is not None:
            groups.append(int(self.pod.security["fsGroup"]))
        return {
            "argv": resolve_argv(self.spec, env, sidemesh=self.pod.sidemesh_argv),
            "env": env,
            "uid": None if uid is None else int(uid),
            "gid": None if security.get("runAsGroup") is None else int(security["runAsGroup"]),
            "groups": groups,
            "workdir": self.spec.get("workingDir") or "/",
            "hostname": self.pod.facts.name,
            "mounts": mounts,
            "expose": self.pod.expose,
            "privileged": privileges.privileged,
            "capabilities": privileges.capability_numbers,
            "no_new_privs": privileges.no_new_privileges,
            # The runtime's state (the CA's key, every pod's volumes and tokens): not theirs.
            "hide": [str(self.pod.pod_dir.parent.parent), *HOST_PRIVATE],
        }

    def _spec_path(self, suffix: str = "") -> Path:
        directory = self.pod.pod_dir / "containers"
        directory.mkdir(parents=True, exist_ok=True)
        return directory / f"{self.name}{suffix}.json"

    def _launcher(self, spec_path: Path) -> list[str]:
        return [
            "ip",
            "netns",
            "exec",
            self.pod.netns,
            self.pod.python,
            "-m",
            "sidemesh.local.launch",
            str(spec_path),
        ]

    # --- one run ----------------------------------------------------------------------------

    async def start(self) -> bool:
        """Start the process; False (and a waiting reason) when it cannot be configured."""
        try:
            spec = self.launch_spec()
        except (EnvError, VolumeError, PrivilegeError) as exc:
            self._waiting("CreateContainerConfigError", str(exc))
            self.pod.event("Warning", "Failed", f"Error: {exc}")
            return False
        spec_path = self._spec_path()
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        log_dir = self.pod.pod_dir / "logs" / self.name
        log_dir.mkdir(parents=True, exist_ok=True)
        existing = sorted(log_dir.glob("*.log"), key=lambda p: int(p.stem))
        for old in existing[: max(0, len(existing) - (LOGS_KEPT - 1))]:
            old.unlink(missing_ok=True)
        with open(log_dir / f"{self.status.restart_count}.log", "ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self._launcher(spec_path),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.pod.launcher_env,
            )
        now = self.pod.clock()
        self.status.state, self.status.reason, self.status.message = "running", "", ""
        self.status.started_at, self.status.finished_at = now, None
        self.status.exit_code, self.status.signal = None, 0
        self.status.pid = self.process.pid
        self.status.ready = False
        self.status.started = False
        self.pod.event("Normal", "Started", f"Started container {self.name}")
        self.pod.changed()
        if self.stopping:
            # stop() ran while the process was being created and found none to signal: end
            # it the same way now, or it would run on with its pod stuck Terminating.
            await self._kill(grace=2)
            return True
        hook = (self.spec.get("lifecycle") or {}).get("postStart")
        if hook:
            ok, why = await run_handler(
                hook, self.spec, pod_ip=self.pod.facts.pod_ip, timeout=30, run_exec=self.exec
            )
            if not ok:
                self.pod.event("Warning", "FailedPostStartHook", why)
                await self._kill(grace=2)
                return True
        self._probe_task = asyncio.create_task(self._probes())
        return True

    async def wait(self) -> int:
        assert self.process is not None
        code = await self.process.wait()
        if self._probe_task is not None:
            self._probe_task.cancel()
        now = self.pod.clock()
        self.status.state = "terminated"
        self.status.exit_code = code if code >= 0 else 128 - code
        self.status.signal = -code if code < 0 else 0
        self.status.reason = "Completed" if code == 0 else "Error"
        self.status.finished_at = now
        self.status.ready = False
        self.status.pid = None
        self.pod.changed()
        return self.status.exit_code

    async def stop(self, grace: float) -> None:
        """preStop hook, SIGTERM, `grace` seconds, SIGKILL (to the whole process group)."""
        self.stopping = True
        self._stopped.set()
        process = self.process
        if process is None or process.returncode is not None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        hook = (self.spec.get("lifecycle") or {}).get("preStop")
        if hook:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    run_handler(
                        hook,
                        self.spec,
                        pod_ip=self.pod.facts.pod_ip,
                        timeout=grace,
                        run_exec=self.exec,
                    ),
                    grace,
                )
        _signal_group(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), max(0.0, deadline - loop.time()))
        except TimeoutError:
            _signal_group(process.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(process.wait()), 5)

    async def exec(self, argv: list[str], timeout: float) -> int:
        """Run a command inside the container (exec probes, hooks); its exit status."""
        spec = {**self.launch_spec(), "argv": argv}
        spec_path = self._spec_path(f".exec-{os.getpid()}-{id(argv)}")
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        process = await asyncio.create_subprocess_exec(
            *self._launcher(spec_path),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=self.pod.launcher_env,
        )
        try:
            return await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            _signal_group(process.pid, signal.SIGKILL)
            await process.wait()
            return -1
        finally:
            spec_path.unlink(missing_ok=True)

    # --- probes -----------------------------------------------------------------------------

    async def _probes(self) -> None:
        startup = self.spec.get("startupProbe") if self.kind != "init" else None
        if startup and not await self._probe(startup, "startup"):
            return
        self.status.started = True
        self.pod.changed()
        readiness = self.spec.get("readinessProbe") if self.kind != "init" else None
        liveness = self.spec.get("livenessProbe") if self.kind != "init" else None
        tasks = []
        if readiness:
            tasks.append(asyncio.create_task(self._probe(readiness, "readiness")))
        else:
            self.status.ready = True
            self.pod.changed()
        if liveness:
            tasks.append(asyncio.create_task(self._probe(liveness, "liveness")))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def _probe(self, probe: dict[str, Any], kind: str) -> bool:
        """Loop one probe. startup: returns True on success; liveness/startup failure kills."""
        settings = ProbeSettings.of(probe, kind=kind)
        await asyncio.sleep(settings.initial_delay)
        successes = failures = 0
        while True:
            ok, why = await run_handler(
                probe,
                self.spec,
                pod_ip=self.pod.facts.pod_ip,
                timeout=settings.timeout,
                run_exec=self.exec,
            )
            if ok:
                successes, failures = successes + 1, 0
                if kind == "startup":
                    return True
                ready_now = kind == "readiness" and successes >= settings.success_threshold
                if ready_now and not self.status.ready:
                    self.status.ready = True
                    self.pod.changed()
            else:
                successes, failures = 0, failures + 1
                self.pod.event("Warning", "Unhealthy", f"{kind.capitalize()} probe failed: {why}")
                if kind == "readiness" and failures >= settings.failure_threshold:
                    if self.status.ready:
                        self.status.ready = False
                        self.pod.changed()
                elif kind != "readiness" and failures >= settings.failure_threshold:
                    self.pod.event(
                        "Normal",
                        "Killing",
                        f"Container {self.name} failed {kind} probe, will be restarted",
                    )
                    self._kill_task = asyncio.create_task(self._kill(float(settings.period)))
                    return False
            await asyncio.sleep(max(settings.period, 1.0))

    async def _kill(self, grace: float) -> None:
        """Stop this run only (the container is restarted, unlike `stop`)."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        _signal_group(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), grace)
        except TimeoutError:
            _signal_group(process.pid, signal.SIGKILL)

    # --- supervision ------------------------------------------------------------------------

    def _waiting(self, reason: str, message: str = "") -> None:
        self.status.state, self.status.reason, self.status.message = "waiting", reason, message
        self.status.ready = False
        self.pod.changed()

    def _report_failure(self, backoff: float) -> None:
        """A failed container is about to be restarted: say so in the pod's events (a crashing
        istio-proxy, say, whose agent exits when Envoy dies), as the kubelet's BackOff does."""
        if backoff:
            self.pod.event(
                "Warning",
                "BackOff",
                f"Back-off restarting failed container {self.name} in pod {self.pod.facts.name}",
            )
        else:
            self.pod.event(
                "Warning",
                "Restarting",
                f"Container {self.name} exited with code {self.status.exit_code}, restarting it",
            )

    def _note_restart(self) -> None:
        self.status.last_exit_code = self.status.exit_code
        self.status.last_finished_at = self.status.finished_at
        self.status.restart_count += 1

    async def run(self, restart_policy: str, *, until_success: bool) -> bool:
        """Run, restarting per policy until stopped. `until_success` (init containers): return
        True once it exits 0; False when it failed for good (policy Never)."""
        backoff = 0.0
        while not self.stopping:
            started = await self.start()
            self.first_start.set()
            ran_for = 0.0
            if started:
                began = self.pod.clock()
                code = await self.wait()
                ran_for = self.pod.clock() - began
                if self.stopping:
                    return False
                if until_success and code == 0:
                    return True
                if restart_policy == "Never" or (restart_policy == "OnFailure" and code == 0):
                    return False
            if ran_for > BACKOFF_RESET_AFTER:
                backoff = 0.0
            if started and self.status.exit_code:
                self._report_failure(backoff)
            if backoff:
                if started:  # a configuration error keeps its own reason while retrying
                    self._waiting(
                        "CrashLoopBackOff",
                        f"back-off {int(backoff)}s restarting failed "
                        f"container={self.name} pod={self.pod.facts.name}",
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), backoff)
            if self.stopping:
                return False
            backoff = min(max(backoff * 2, BACKOFF_START), BACKOFF_CAP)
            if started:
                self._note_restart()
        return False


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
