"""Runs Envoy for the life of the agent; drains and stops it when the pod is going away.

* Envoy's output goes to the agent's log, each line prefixed `envoy[pid]:`.
* An unexpected exit of Envoy ends the agent too (exit code 1), as Istio's pilot-agent does
  (istio/istio#17460): the kubelet then restarts the `istio-proxy` container, so a crashing
  proxy shows where users look — the pod's RESTARTS column and restart count, its events, the
  readiness it loses at once, CrashLoopBackOff when it keeps crashing — and Kubernetes owns the
  back-off. Restarting Envoy quietly inside the container would hide all of that.
* Envoy gets SIGKILL from the kernel if the agent dies without stopping it (PR_SET_PDEATHSIG),
  so an agent killed with SIGKILL leaves no orphaned Envoy behind. It runs in its own session,
  so that only the agent decides when it stops (a signal to the container's process group
  would otherwise end it before any drain).
* Drain (SIGTERM to the agent or /quitquitquit), in three steps so that no request in flight
  is cut:
  1. POST the admin's `/drain_listeners?inboundonly&graceful&skip_exit`: inbound connections
     are told to go (HTTP/1 `Connection: close`, HTTP/2 GOAWAY) while outbound keeps working,
     so in-flight requests can still call other services; wait terminationDrainDuration.
  2. Quiesce: POST `/drain_listeners` — every listener stops accepting at once (the pod's
     capture rules hold new connections' SYNs until the next proxy listens, see
     `capture.rules`) — then wait, a few seconds at most, until the connections still open
     have finished (Envoy's `downstream_cx_active` gauges reach 0).
  3. SIGTERM Envoy (SIGKILL after a grace period).
  What step 2 cannot save: a connection the kernel completed into the listen backlog in the
  instant before the listener closed (it is reset), and idle keep-alive connections still
  open at the end of the wait (closed; HTTP clients retry a request on a stale pooled
  connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import orjson

from sidemesh.agent import http
from sidemesh.agent.envoy_binary import EnvoyNotFoundError, find_envoy_binary
from sidemesh.agent.settings import AgentSettings

__all__ = ["EnvoyExitedError", "EnvoyNotFoundError", "EnvoySupervisor", "envoy_command",
           "find_envoy_binary"]  # fmt: skip

log = logging.getLogger("sidemesh.agent.envoy")
output_log = logging.getLogger("sidemesh.agent.envoy.output")

DRAIN_PATH: Final = "/drain_listeners?inboundonly&graceful&skip_exit"
STOP_LISTENERS_PATH: Final = "/drain_listeners"  # every listener stops accepting, now
# The listeners' open downstream connections (the admin listener's are ours: not counted).
ACTIVE_CONNECTIONS_PATH: Final = (
    "/stats?format=json&filter=%5Elistener%5C..*downstream_cx_active%24"
)
_ADMIN_LISTENER_PREFIX: Final = "listener.admin."
QUIESCE_POLL_SECONDS: Final = 0.1
_PR_SET_PDEATHSIG: Final = 1


class EnvoyExitedError(RuntimeError):
    """Envoy exited while the agent was not stopping it."""


def envoy_command(settings: AgentSettings, binary: Path) -> list[str]:
    """Envoy's command line (the flags Istio's agent passes, from our settings)."""
    options = settings.envoy
    command = [
        str(binary),
        "-c", str(settings.paths.bootstrap),
        "--drain-time-s", str(max(1, round(options.drain_duration))),
        "--drain-strategy", "immediate",  # clients hear about the drain as soon as it starts
        "--parent-shutdown-time-s", str(max(2, round(options.drain_duration)) + 15),
        "--local-address-ip-version", "v6" if ":" in settings.identity.instance_ip else "v4",
        "--file-flush-interval-msec", "1000",
        "--disable-hot-restart",  # also: no shared memory, so many Envoys coexist on one host
        "--allow-unknown-static-fields",
        "--log-level", options.log_level,
    ]  # fmt: skip
    if options.component_log_level:
        command += ["--component-log-level", options.component_log_level]
    if options.concurrency is not None:
        command += ["--concurrency", str(options.concurrency)]
    return command


async def _active_connections(admin: tuple[str, int]) -> int | None:
    """The open downstream connections of Envoy's listeners, from its admin stats."""
    try:
        response = await http.fetch(*admin, ACTIVE_CONNECTIONS_PATH, timeout=2.0)
        stats = orjson.loads(response.body).get("stats") or []
    except (http.HttpError, orjson.JSONDecodeError, AttributeError):
        return None
    return sum(
        int(stat.get("value") or 0)
        for stat in stats
        if isinstance(stat, dict) and _counted(str(stat.get("name", "")))
    )


def _counted(name: str) -> bool:
    """A listener's total (not also its per-worker copies), and not the admin listener."""
    return not name.startswith(_ADMIN_LISTENER_PREFIX) and ".worker_" not in name


def _die_with_parent() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork, not in the child
    except (OSError, AttributeError):
        return None

    def set_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return set_death_signal


class EnvoySupervisor:
    def __init__(self, command: Sequence[str]) -> None:
        self._command = list(command)
        self._stopping = asyncio.Event()
        self._process: asyncio.subprocess.Process | None = None
        self._exited = asyncio.Event()
        self._exited.set()

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    async def _forward_output(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            output_log.info("envoy[%d]: %s", process.pid, line.decode(errors="replace").rstrip())

    async def _run_once(self) -> int:
        process = await asyncio.create_subprocess_exec(
            *self._command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_die_with_parent(),
            # Its own session: a signal sent to the container's whole process group (a
            # runtime's stop, Ctrl-C) reaches the agent, which drains Envoy, and not Envoy,
            # which would exit at once and cut every request in flight.
            start_new_session=True,
        )
        self._process = process
        self._exited.clear()
        log.info("started Envoy, pid %d", process.pid)
        if self._stopping.is_set():  # stop() came while the process was being created
            process.terminate()
        try:
            await self._forward_output(process)
            return await process.wait()
        finally:
            self._exited.set()

    async def run(self) -> None:
        """Run Envoy until `stop()` or `drain()`; EnvoyExitedError if it exits on its own."""
        if self._stopping.is_set():
            return
        code = await self._run_once()
        if self._stopping.is_set():
            log.info("Envoy exited with %s", code)
            return
        raise EnvoyExitedError(
            f"Envoy exited unexpectedly (code {code}); exiting so that the container is restarted"
        )

    async def drain(self, *, admin: tuple[str, int], duration: float) -> None:
        """Drain inbound listeners gracefully and give in-flight requests `duration` to finish.

        From here on an exit is expected (Envoy itself may exit, e.g. killed).
        """
        self._stopping.set()
        if self.pid is None:
            return
        try:
            response = await http.fetch(*admin, DRAIN_PATH, method="POST", timeout=2.0)
            log.info("draining Envoy for %.1fs (admin: HTTP %d)", duration, response.status)
        except http.HttpError as exc:
            log.warning("cannot ask Envoy to drain: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._exited.wait(), timeout=duration)

    async def quiesce(self, *, admin: tuple[str, int], limit: float) -> int | None:
        """Stop every listener accepting, then wait up to `limit` seconds until no downstream
        connection is open. Returns how many were still open (None: unknown)."""
        self._stopping.set()
        if self.pid is None:
            return 0
        try:
            await http.fetch(*admin, STOP_LISTENERS_PATH, method="POST", timeout=2.0)
        except http.HttpError as exc:
            log.warning("cannot stop Envoy's listeners: %s", exc)
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        active: int | None = None
        while self.pid is not None:
            active = await _active_connections(admin)
            if active == 0 or loop.time() >= deadline:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exited.wait(), timeout=QUIESCE_POLL_SECONDS)
        log.info("listeners stopped; %s connection(s) still open", active)
        return active

    async def stop(self, *, grace: float = 5.0) -> None:
        """Stop supervising and end Envoy: SIGTERM, then SIGKILL after `grace` seconds."""
        self._stopping.set()
        process = self._process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(self._exited.wait(), timeout=grace)
        except TimeoutError:
            log.warning("Envoy did not exit within %.1fs; killing it", grace)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await self._exited.wait()
