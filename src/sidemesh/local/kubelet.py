"""The kubelet's part: one worker per pod, from sandbox to teardown.

1. Sandbox: the pod's network namespace on the bridge, its /etc/hosts and resolv.conf, its
   volumes.
2. Init containers in order, each to successful completion; a native sidecar (an init
   container with `restartPolicy: Always`) is started, and the next one waits until it has
   started (startup probe passed), then it keeps running and restarting.
3. The regular containers, started in order (each after the previous one's postStart hook),
   restarted per the pod's restartPolicy, probed.
4. Deletion: regular containers get SIGTERM and the grace period, then the sidecars in reverse
   order, then SIGKILL for anything left in the namespace; the namespace and the pod's
   directory go.

The worker owns the pod's status fields; the daemon copies them into the state file.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import shutil
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidemesh.local import network
from sidemesh.local.containers import ContainerRunner, PodContext
from sidemesh.local.env import PodFacts
from sidemesh.local.model import ContainerStatus, NetworkRecord, PodRecord
from sidemesh.local.volumes import (
    Lookup,
    TokenSource,
    VolumeError,
    VolumeSources,
    materialize,
    volume_owner,
)

log = logging.getLogger("sidemesh.local.kubelet")

SANDBOX_RETRY_SECONDS = 5.0
SIDECAR_MIN_GRACE = 2.0


@dataclass
class NodeContext:
    """What the daemon gives every pod worker."""

    network: NetworkRecord
    pods_dir: Path
    python: str
    launcher_env: dict[str, str]
    sidemesh_argv: list[str]
    sidemesh_bin: str
    expose: list[str]
    lookups: Callable[[str], tuple[Lookup, Lookup]]  # namespace -> (configmaps, secrets)
    token: TokenSource
    ensure_mount_point: Callable[[str, bool], None]
    etc_files: Callable[[PodRecord], tuple[str, str]]  # pod -> (hosts, resolv.conf)
    clock: Callable[[], float]
    node_cpus: int
    node_memory_bytes: int
    max_grace_seconds: float


class PodWorker:
    def __init__(self, pod: PodRecord, node: NodeContext, on_change: Callable[[], None]):
        self.pod = pod.model_copy(deep=True)
        self.node = node
        self.on_change = on_change
        self.events: list[tuple[str, str, str]] = []
        self.version = 0
        self.done = False
        self.runners: dict[str, ContainerRunner] = {}
        self._terminate = asyncio.Event()
        self._grace = float(pod.spec.get("terminationGracePeriodSeconds", 30))
        self._tasks: list[asyncio.Task[bool]] = []
        self._watchers: list[asyncio.Task[None]] = []
        self._restarts: list[asyncio.Task[None]] = []  # in-place image changes
        self._task: asyncio.Task[None] | None = None
        self._volume_paths: dict[str, Path] = {}
        spec = self.pod.spec
        has_init = bool(spec.get("initContainers"))
        if not self.pod.init_statuses and not self.pod.statuses:
            self.pod.init_statuses = [
                ContainerStatus(name=str(c.get("name")), reason="PodInitializing")
                for c in spec.get("initContainers") or []
            ]
            self.pod.statuses = [
                ContainerStatus(
                    name=str(c.get("name")),
                    reason="PodInitializing" if has_init else "ContainerCreating",
                )
                for c in spec.get("containers") or []
            ]
        else:  # a new daemon adopts a pod whose processes were killed with the old one
            now = node.clock()
            for status in [*self.pod.init_statuses, *self.pod.statuses]:
                if status.state == "running":
                    status.last_exit_code, status.last_finished_at = 137, now
                    status.restart_count += 1
                    status.state, status.reason = "waiting", "ContainerCreating"
                    status.ready = status.started = False

    # --- interface to the daemon ------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._main(), name=f"pod {self.pod.name}")

    def terminate(self, grace_seconds: int | None) -> None:
        if grace_seconds is not None:
            self._grace = float(grace_seconds)
        self._terminate.set()

    def follow(self, pod: Mapping[str, Any]) -> None:
        """Take from the pod as the API server now has it what Kubernetes lets change on a
        running pod (it refused the rest): labels and annotations, which the downward API
        files show at once, and container images, whose container alone is restarted with
        the new image (its restartCount goes up), as the kubelet does when a container's spec
        hash changes."""
        if self._terminate.is_set():
            return
        metadata = pod.get("metadata") or {}
        current = self.pod.manifest.setdefault("metadata", {})
        images = _images(pod.get("spec") or {})
        metadata_changed = any(
            (metadata.get(field) or {}) != (current.get(field) or {})
            for field in ("labels", "annotations")
        )
        changed_images = {
            name: image for name, image in images.items()
            if image != _images(self.pod.spec).get(name, image)
        }  # fmt: skip
        if not metadata_changed and not changed_images:
            return
        for field in ("labels", "annotations"):
            current[field] = copy.deepcopy(dict(metadata.get(field) or {}))
        for field in ("initContainers", "containers"):
            for container in self.pod.spec.get(field) or []:
                if container.get("name") in changed_images:
                    container["image"] = changed_images[container["name"]]
        if metadata_changed and self._volume_paths:  # the sandbox exists: refresh its files
            self._refresh_downward_api()
        for name, image in changed_images.items():
            runner = self.runners.get(name)
            if runner is None:
                continue  # not started yet: it starts with the new image
            runner.spec = {**runner.spec, "image": image}
            if runner.kind == "init":
                continue  # finished: not run again (Kubernetes 1.20+)
            self.event(
                "Normal", "Killing", f"Container {name} definition changed, will be restarted"
            )
            grace = max(0.0, min(self._grace, self.node.max_grace_seconds))
            # The run loop starts it again at once, with the new image (a restart, no crash).
            self._restarts.append(asyncio.create_task(runner._kill(grace)))
        self._changed()

    def _refresh_downward_api(self) -> None:
        volumes = [v for v in self.pod.spec.get("volumes") or [] if "downwardAPI" in v]
        if not volumes:
            return
        config_maps, secrets = self.node.lookups(self.pod.namespace)
        try:
            materialize(
                volumes, self.pod_dir, self._facts(),
                VolumeSources(config_maps=config_maps, secrets=secrets, token=self.node.token),
                volume_owner(self.pod.spec),
            )  # fmt: skip
        except (VolumeError, OSError) as exc:
            self.event("Warning", "FailedMount", str(exc))

    def event(self, kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))
        self._changed()

    def _changed(self) -> None:
        self._aggregate()
        self.version += 1
        self.on_change()

    # --- status -----------------------------------------------------------------------------

    def _aggregate(self) -> None:
        spec = self.pod.spec
        sidecars = {
            str(c.get("name"))
            for c in spec.get("initContainers") or []
            if c.get("restartPolicy") == "Always"
        }
        init_done = all(
            (s.started if s.name in sidecars else s.state == "terminated" and s.exit_code == 0)
            for s in self.pod.init_statuses
        )
        self.pod.initialized = init_done
        regular = self.pod.statuses
        self.pod.ready = (
            init_done
            and all(s.ready for s in regular)
            and all(s.ready for s in self.pod.init_statuses if s.name in sidecars)
        )
        if self.pod.phase in ("Succeeded", "Failed"):
            return
        if init_done and any(s.state == "running" or s.restart_count for s in regular):
            self.pod.phase = "Running"

    # --- lifecycle --------------------------------------------------------------------------

    async def _main(self) -> None:
        try:
            if self.pod.phase in ("Succeeded", "Failed"):
                pass  # adopted after it finished: nothing runs again
            elif await self._sandbox():
                await self._containers()
            await self._terminate.wait()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a worker bug must not leave the pod running unseen
            log.exception("pod %s/%s failed", self.pod.namespace, self.pod.name)
            self.event("Warning", "Failed", f"sidemesh local runtime error: {exc}")
            await self._terminate.wait()
        finally:
            await self._shutdown()

    def _facts(self) -> PodFacts:
        return PodFacts(
            name=self.pod.name,
            namespace=self.pod.namespace,
            uid=self.pod.uid,
            pod_ip=self.pod.pod_ip or "",
            host_ip=self.node.network.bridge_ip,
            node_name=self.node.network.node_name,
            service_account=str(self.pod.spec.get("serviceAccountName") or "default"),
            labels=self.pod.labels,
            annotations=self.pod.annotations,
            node_cpus=self.node.node_cpus,
            node_memory_bytes=self.node.node_memory_bytes,
        )

    @property
    def pod_dir(self) -> Path:
        return self.node.pods_dir / self.pod.uid

    async def _sandbox(self) -> bool:
        """Network and volumes; retried until it works or the pod is deleted."""
        assert self.pod.netns and self.pod.veth and self.pod.pod_ip
        while not self._terminate.is_set():
            try:
                await asyncio.to_thread(
                    network.create_pod_network,
                    self.node.network,
                    netns=self.pod.netns,
                    veth=self.pod.veth,
                    address=self.pod.pod_ip,
                )
                hosts, resolv = self.node.etc_files(self.pod)
                network.write_netns_etc(self.pod.netns, hosts=hosts, resolv_conf=resolv)
                self.pod_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                config_maps, secrets = self.node.lookups(self.pod.namespace)
                self._volume_paths = materialize(
                    list(self.pod.spec.get("volumes") or []),
                    self.pod_dir,
                    self._facts(),
                    VolumeSources(config_maps=config_maps, secrets=secrets, token=self.node.token),
                    volume_owner(self.pod.spec),
                )
                return True
            except (network.NetworkError, VolumeError, OSError) as exc:
                reason = "FailedMount" if isinstance(exc, VolumeError) else "FailedCreatePodSandBox"
                self.event("Warning", reason, str(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._terminate.wait(), SANDBOX_RETRY_SECONDS)
        return False

    def _context(self) -> PodContext:
        config_maps, secrets = self.node.lookups(self.pod.namespace)
        return PodContext(
            netns=str(self.pod.netns),
            pod_dir=self.pod_dir,
            facts=self._facts(),
            volumes=list(self.pod.spec.get("volumes") or []),
            volume_paths=self._volume_paths,
            security=dict(self.pod.spec.get("securityContext") or {}),
            python=self.node.python,
            launcher_env=self.node.launcher_env,
            sidemesh_argv=self.node.sidemesh_argv,
            sidemesh_bin=self.node.sidemesh_bin,
            expose=self.node.expose,
            config_maps=config_maps,
            secrets=secrets,
            ensure_mount_point=self.node.ensure_mount_point,
            changed=self._changed,
            event=self.event,
            clock=self.node.clock,
        )

    async def _until(self, condition: asyncio.Event) -> bool:
        """Wait for `condition` or deletion; True if the condition came first."""
        waiters = [
            asyncio.ensure_future(condition.wait()),
            asyncio.ensure_future(self._terminate.wait()),
        ]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        return condition.is_set() and not self._terminate.is_set()

    async def _containers(self) -> None:
        context = self._context()
        policy = str(self.pod.spec.get("restartPolicy") or "Always")
        for spec, status in zip(
            self.pod.spec.get("initContainers") or [], self.pod.init_statuses, strict=False
        ):
            sidecar = spec.get("restartPolicy") == "Always"
            runner = ContainerRunner(context, spec, status, "sidecar" if sidecar else "init")
            self.runners[runner.name] = runner
            if sidecar:
                self._tasks.append(asyncio.create_task(runner.run("Always", until_success=False)))
                started = asyncio.Event()
                self._watch_started(runner, started)
                if not await self._until(started):
                    return
                continue
            task = asyncio.create_task(runner.run(policy, until_success=True))
            self._tasks.append(task)
            finished = asyncio.Event()
            task.add_done_callback(_setter(finished))
            if not await self._until(finished):
                return
            if not task.result():  # failed for good (restartPolicy Never)
                self.pod.phase = "Failed"
                self._changed()
                return
        regular: list[asyncio.Task[bool]] = []
        for spec, status in zip(
            self.pod.spec.get("containers") or [], self.pod.statuses, strict=False
        ):
            runner = ContainerRunner(context, spec, status, "regular")
            self.runners[runner.name] = runner
            regular.append(asyncio.create_task(runner.run(policy, until_success=False)))
            self._tasks.append(regular[-1])
            if not await self._until(runner.first_start):
                return
        if policy != "Always" and regular:
            done = asyncio.Event()
            gathered = asyncio.gather(*regular, return_exceptions=True)
            gathered.add_done_callback(lambda _: done.set())
            if await self._until(done):
                failed = any(s.exit_code for s in self.pod.statuses)
                self.pod.phase = "Failed" if failed else "Succeeded"
                self._changed()

    def _watch_started(self, runner: ContainerRunner, started: asyncio.Event) -> None:
        async def watch() -> None:
            while not runner.status.started:
                await asyncio.sleep(0.1)
            started.set()

        self._watchers.append(asyncio.create_task(watch()))

    async def _shutdown(self) -> None:
        loop = asyncio.get_running_loop()
        grace = max(0.0, min(self._grace, self.node.max_grace_seconds))
        deadline = loop.time() + grace
        sidecars = [r for r in self.runners.values() if r.kind == "sidecar"]
        others = [r for r in self.runners.values() if r.kind != "sidecar"]
        await asyncio.gather(*(r.stop(grace) for r in others), return_exceptions=True)
        for runner in reversed(sidecars):
            remaining = max(SIDECAR_MIN_GRACE, deadline - loop.time())
            await runner.stop(remaining)
        for task in [*self._tasks, *self._watchers, *self._restarts]:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.pod.netns:
            for pid in await asyncio.to_thread(network.netns_pids, self.pod.netns):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            await asyncio.to_thread(
                network.delete_pod_network,
                self.node.network,
                netns=self.pod.netns,
                veth=self.pod.veth,
            )
        shutil.rmtree(self.pod_dir, ignore_errors=True)
        self.done = True
        self.version += 1
        self.on_change()


def _setter(event: asyncio.Event) -> Callable[[object], None]:
    return lambda _: event.set()


def _images(spec: Mapping[str, Any]) -> dict[str, str]:
    return {
        str(c.get("name")): str(c.get("image") or "")
        for field in ("initContainers", "containers")
        for c in spec.get(field) or []
        if isinstance(c, Mapping)
    }
