"""A container asked to stop while its process is still being created ends anyway (stop()
finds no process to signal at that moment; without care the process then ran on and its pod
stayed Terminating). No namespaces: the runner's launcher is swapped for a plain sleeper."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from sidemesh.local.containers import ContainerRunner, PodContext
from sidemesh.local.model import ContainerStatus

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


class SleeperRunner(ContainerRunner):
    """The real start/run/stop logic around a process that ignores nothing and sleeps."""

    def launch_spec(self) -> dict[str, Any]:
        return {}

    def _launcher(self, spec_path: Path) -> list[str]:
        return SLEEPER


def pod_context(tmp_path: Path) -> PodContext:
    return PodContext(
        netns="unused", pod_dir=tmp_path, facts=None,  # type: ignore[arg-type]
        volumes=[], volume_paths={}, security={}, python=sys.executable, launcher_env={},
        sidemesh_argv=[], sidemesh_bin="", expose=[], config_maps=None,  # type: ignore[arg-type]
        secrets=None,  # type: ignore[arg-type]
        ensure_mount_point=lambda path, is_dir: None, changed=lambda: None,
        event=lambda kind, reason, message: None, clock=time.monotonic,
    )  # fmt: skip


async def stop_while_creating(tmp_path: Path) -> tuple[bool, int | None]:
    runner = SleeperRunner(pod_context(tmp_path), {"name": "app"}, ContainerStatus(name="app"),
                           "regular")  # fmt: skip
    real_create = asyncio.create_subprocess_exec

    async def create_after_stop(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        await runner.stop(grace=5)  # the kubelet's stop lands before the process exists
        return await real_create(*args, **kwargs)

    asyncio.create_subprocess_exec = create_after_stop
    try:
        restarted = await asyncio.wait_for(runner.run("Always", until_success=False), 60)
    finally:
        asyncio.create_subprocess_exec = real_create
    assert runner.process is not None
    return restarted, runner.process.returncode


def test_a_stop_during_creation_ends_the_new_process(tmp_path: Path) -> None:
    restarted, returncode = asyncio.run(stop_while_creating(tmp_path))
    assert restarted is False
    assert returncode is not None and returncode < 0  # ended by a signal, not left running
