"""The agent as one asyncio program, and `sidemesh agent wait`.

Startup order: the status server binds first (so probes get a reasoned 503 rather than a
refused connection while the rest starts), then the workload certificate, then SDS on its Unix
socket, then Envoy with its bootstrap. `/healthz/ready` turns 200 once Envoy is live with its
first listeners and clusters. SIGTERM, SIGINT or `POST /quitquitquit` drain Envoy and exit 0.
If Envoy exits on its own the agent exits 1, for the kubelet to restart the container.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Awaitable
from typing import Final

from sidemesh.agent import http
from sidemesh.agent.bootstrap import loopback, render_bootstrap
from sidemesh.agent.ca_client import CaClient
from sidemesh.agent.envoy import (
    EnvoyExitedError,
    EnvoyNotFoundError,
    EnvoySupervisor,
    envoy_command,
    find_envoy_binary,
)
from sidemesh.agent.metrics import AgentMetrics
from sidemesh.agent.prober import Prober
from sidemesh.agent.rotation import CertificateManager, sleep_unless
from sidemesh.agent.sds import SdsServer
from sidemesh.agent.settings import AgentSettings
from sidemesh.agent.status import AgentState, StatusApp, StatusServer
from sidemesh.security.files import write_atomically

log = logging.getLogger("sidemesh.agent")

DEFAULT_READY_URL: Final = "http://127.0.0.1:15020/healthz/ready"


def configure_logging(level: int) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    # Envoy's own --log-level already chose what it prints; never filter it a second time.
    logging.getLogger("sidemesh.agent.envoy.output").setLevel(logging.INFO)
    logging.getLogger("uvicorn.error").setLevel(max(level, logging.WARNING))


async def _report_ready(app: StatusApp, stop: asyncio.Event, started: float) -> None:
    """Log, once, how long the sidecar took to become ready."""
    while not await sleep_unless(stop, 0.2):
        if await app.not_ready_reason() is None:
            log.info("sidecar ready %.2fs after agent start", time.monotonic() - started)
            return


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


async def run_agent(settings: AgentSettings) -> int:
    """Run until asked to stop; the process exit code."""
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
    certificates = CertificateManager(
        client=CaClient(
            address=control_plane.ca_address,
            server_name=control_plane.server_name(control_plane.ca_address),
            token_path=settings.paths.token,
            cluster_id=settings.cluster_id,
        ),
        spiffe_id=settings.identity.spiffe_id,
        root_cert=settings.paths.root_cert,
        ttl=settings.cert_ttl,
        renew_fraction=settings.renew_fraction,
        metrics=metrics,
        output_dir=settings.paths.output_certs,
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
        if not await certificates.obtain(stop) or certificates.current is None:
            return 0  # asked to stop before the first certificate arrived
        sds = SdsServer(settings.paths.sds_socket, certificates.current)
        await sds.start()
        certificates.subscribe(sds.publish)
        tasks.start(certificates.keep_renewed(stop), "certificate renewal")
        write_atomically(settings.paths.bootstrap, render_bootstrap(settings), 0o644)
        supervisor = EnvoySupervisor(envoy_command(settings, binary))
        tasks.start(supervisor.run(), "Envoy supervisor")
        tasks.start(_report_ready(app, stop, started), "readiness report")
        await stop.wait()
        if tasks.failed:
            return 1
        state.draining = True
        log.info("stopping: draining Envoy")
        await supervisor.drain(admin=admin, duration=settings.envoy.termination_drain_duration)
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
