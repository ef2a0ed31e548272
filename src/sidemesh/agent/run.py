"""The agent as one asyncio program, and `sidemesh agent wait`.

Startup order: the status server binds first (so probes get a reasoned 503 rather than a
refused connection while the rest starts), then SDS on its Unix socket and Envoy with its
bootstrap, while the workload certificate is being requested (Envoy's secrets wait for it).
`/healthz/ready` turns 200 once Envoy is live with its first listeners and clusters. SIGTERM,
SIGINT or `POST /quitquitquit` drain Envoy, stop its listeners, let the requests in flight
finish (`EnvoySupervisor.drain`, `quiesce`) and exit 0. If Envoy exits on its own the agent
exits 1, for the kubelet to restart the container.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import signal
import time
from collections.abc import Awaitable
from typing import Final

from sidemesh.agent import http
from sidemesh.agent.bootstrap import loopback, render_bootstrap
from sidemesh.agent.certificate_setup import certificate_manager
from sidemesh.agent.envoy import (
    EnvoyExitedError,
    EnvoyNotFoundError,
    EnvoySupervisor,
    envoy_command,
    find_envoy_binary,
)
from sidemesh.agent.issuing import PendingAnswer
from sidemesh.agent.metrics import AgentMetrics
from sidemesh.agent.prober import Prober
from sidemesh.agent.rotation import sleep_unless
from sidemesh.agent.sds import SdsServer
from sidemesh.agent.settings import AgentSettings
from sidemesh.agent.status import AgentState, StatusApp, StatusServer
from sidemesh.agent.telemetry import envoy_environment
from sidemesh.security.files import write_atomically

log = logging.getLogger("sidemesh.agent")

DEFAULT_READY_URL: Final = "http://127.0.0.1:15020/healthz/ready"
# After the drain, how long requests still in flight get once the listeners stopped accepting.
QUIESCE_LIMIT_SECONDS: Final = 3.0


async def _report_ready(
    app: StatusApp, stop: asyncio.Event, started: float, role: str = "sidecar"
) -> None:
    """Log, once, how long the proxy (`role`: sidecar, or gateway) took to become ready."""
    while not await sleep_unless(stop, 0.2):
        if await app.not_ready_reason() is None:
            log.info("%s ready %.2fs after agent start", role, time.monotonic() - started)
            release_startup_memory()
            return


def release_startup_memory() -> None:
    """Give back what start-up used and no longer needs: collect its garbage, keep the
    collector off the objects that live as long as the agent (gc.freeze), and return the
    C heap's free pages to the kernel (glibc keeps them otherwise)."""
    gc.collect()
    gc.freeze()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


class _Tasks:
    """Background tasks; the first to fail stops the agent with exit code 1."""

    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop
        self._tasks: list[asyncio.Task[None]] = []
        self.failed = False

    def start(self, work: Awaitable[None], name: str) -> None:
        async def guarded() -> None:
            try:
                await work
            except EnvoyExitedError as exc:
                log.error("%s", exc)
                self.failed = True
                self._stop.set()
            except Exception:
                log.exception("%s failed; stopping the agent", name)
                self.failed = True
                self._stop.set()

        self._tasks.append(asyncio.create_task(guarded(), name=name))

    async def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def run_agent(
    settings: AgentSettings, *, first_certificate: PendingAnswer | None = None
) -> int:
    """Run until asked to stop; the process exit code. `first_certificate`: a request
    already under way (see `launch`)."""
    if settings.disable_envoy:  # Istio's DISABLE_ENVOY: a proxyless gRPC app's agent
        from sidemesh.agent.no_envoy import run_without_envoy

        return await run_without_envoy(settings, first_certificate=first_certificate)
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        binary = find_envoy_binary(settings.paths.envoy_binary)
    except EnvoyNotFoundError as exc:
        log.error("%s", exc)
        return 1

    metrics = AgentMetrics()
    control_plane = settings.control_plane
    log.info(
        "control plane %s (revision %s)",
        control_plane.discovery_address, settings.revision or "default",
    )  # fmt: skip
    certificates = certificate_manager(
        settings,
        metrics=metrics,
        output_dir=settings.paths.output_certs,
        first_certificate=first_certificate,
    )
    state = AgentState(has_certificate=lambda: certificates.current is not None)
    admin = (loopback(settings), settings.ports.admin)
    app = StatusApp(
        state=state,
        prober=Prober(settings.app_probers, default_host=settings.probe_host, metrics=metrics),
        metrics=metrics,
        admin=admin,
        app_metrics=settings.app_metrics,
        app_host=settings.probe_host,
        on_quit=stop.set,
    )
    status = StatusServer(app, host=settings.status_host, port=settings.ports.status)
    tasks = _Tasks(stop)
    sds: SdsServer | None = None
    supervisor: EnvoySupervisor | None = None
    try:
        await status.start()
        # SDS and Envoy start while the first certificate is requested: Envoy's secrets
        # (and so its connection to the control plane) wait for it, its own start does not.
        sds = SdsServer(settings.paths.sds_socket)
        await sds.start()
        certificates.subscribe(sds.publish)
        write_atomically(settings.paths.bootstrap, render_bootstrap(settings), 0o644)
        os.environ.update(envoy_environment(settings))  # Envoy's own workload, for telemetry
        supervisor = EnvoySupervisor(envoy_command(settings, binary))
        tasks.start(supervisor.run(), "Envoy supervisor")
        if not await certificates.obtain(stop) or certificates.current is None:
            return 0 if not tasks.failed else 1  # asked to stop before the first certificate
        tasks.start(certificates.keep_renewed(stop), "certificate renewal")
        role = "gateway" if settings.proxy_type == "router" else "sidecar"
        tasks.start(_report_ready(app, stop, started, role), "readiness report")
        await stop.wait()
        if tasks.failed:
            return 1
        state.draining = True
        log.info("stopping: draining Envoy")
        await supervisor.drain(admin=admin, duration=settings.envoy.termination_drain_duration)
        await supervisor.quiesce(admin=admin, limit=QUIESCE_LIMIT_SECONDS)
        return 0
    except OSError as exc:
        log.error("%s", exc)
        return 1
    finally:
        stop.set()
        if supervisor is not None:
            await supervisor.stop()
        await tasks.cancel()
        if sds is not None:
            await sds.stop()
        await status.stop()
        log.info("agent stopped")


async def wait_until_ready(
    url: str, *, timeout: float, period: float = 0.5, request_timeout: float = 1.0
) -> tuple[bool, str]:
    """Poll `url` until it answers 200 (True) or `timeout` passes (False, the last problem)."""
    deadline = time.monotonic() + timeout
    problem = "not polled yet"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False, problem
        try:
            response = await http.fetch_url(url, timeout=min(request_timeout, remaining))
        except http.HttpError as exc:
            problem = str(exc)
        else:
            if response.status == 200:
                return True, "ready"
            problem = f"HTTP {response.status}: {response.text.strip()}"
        await asyncio.sleep(min(period, max(deadline - time.monotonic(), 0)))
