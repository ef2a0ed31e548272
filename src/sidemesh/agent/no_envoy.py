"""The agent without Envoy (Istio's DISABLE_ENVOY=true, the `grpc-agent` template).

A proxyless gRPC app does its own xDS and mTLS; what it lacks is an identity. So this agent
obtains the workload certificate (the same CSR to the CA as a sidecar's), writes it as files
(OUTPUT_CERTS, default /var/lib/istio/data: cert-chain.pem, key.pem 0600 from its first byte,
root-cert.pem) for the app's gRPC `file_watcher` certificate provider, writes the gRPC xDS
bootstrap (GRPC_XDS_BOOTSTRAP, default next to the certificates), keeps the certificate
renewed, and answers `/healthz/ready` on its status port once all of that is in place.

Where the app's xDS goes: straight to the discovery's TLS port (CA_ADDR / discoveryAddress,
:15012), presenting the workload certificate from those same files (gRFC A65 channel
credentials). Istio's agent instead relays xDS on a Unix socket; here that would put a gRPC
stack (or an HTTP/2 relay) into the lean agent for no gain: the discovery already
authenticates a caller by its mesh certificate and binds it to its namespace, exactly as it
does for Envoy, and the app needs the certificate files anyway for its own mTLS. With
`--xds-plaintext` the bootstrap names the plaintext port instead (as `grpc-simple` does).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from sidemesh.agent.certificate_setup import certificate_manager
from sidemesh.agent.grpc_bootstrap import (
    CertificateFiles,
    GrpcBootstrapError,
    GrpcIdentity,
    grpc_bootstrap,
)
from sidemesh.agent.issuing import PendingAnswer
from sidemesh.agent.metrics import AgentMetrics, AppMetricsTarget, merge_metrics
from sidemesh.agent.prober import Prober
from sidemesh.agent.settings import AgentSettings
from sidemesh.agent.status import AgentState, StatusApp, StatusServer
from sidemesh.security.files import write_atomically

log = logging.getLogger("sidemesh.agent.no_envoy")

DEFAULT_OUTPUT_CERTS: Final = Path("/var/lib/istio/data")
BOOTSTRAP_FILE: Final = "grpc-bootstrap.json"
_NO_ADMIN: Final = ("127.0.0.1", 0)  # there is no Envoy admin to ask


def certificate_files(settings: AgentSettings) -> CertificateFiles:
    return CertificateFiles(settings.paths.output_certs or DEFAULT_OUTPUT_CERTS)


def bootstrap_path(settings: AgentSettings) -> Path:
    return settings.paths.grpc_bootstrap or certificate_files(settings).directory / BOOTSTRAP_FILE


def render_grpc_bootstrap(settings: AgentSettings) -> bytes:
    """The app's bootstrap: this pod's node, the discovery, and the certificate files."""
    identity = settings.identity
    node = GrpcIdentity(
        pod_name=identity.pod_name,
        namespace=identity.namespace,
        instance_ip=identity.instance_ip,
        domain=identity.domain,
    )
    control_plane = settings.control_plane
    metadata = {
        **settings.metadata,  # ISTIO_META_*, as a sidecar's node carries them
        "SERVICE_ACCOUNT": identity.service_account,
        "LABELS": dict(settings.labels),
        "CLUSTER_ID": settings.cluster_id,
    }
    return grpc_bootstrap(
        node,
        discovery_address=control_plane.discovery_address,
        certificates=certificate_files(settings),
        xds_tls=not control_plane.plaintext,
        metadata=metadata,
    )


class NoEnvoyStatusApp(StatusApp):
    """The status server's answers with no Envoy behind it: ready once the certificate files
    and the bootstrap are written; metrics are the agent's (and the app's, if annotated)."""

    def __init__(
        self,
        *,
        bootstrap: Path,
        state: AgentState,
        prober: Prober,
        metrics: AgentMetrics,
        app_metrics: AppMetricsTarget | None,
        app_host: str,
        on_quit: Callable[[], None],
    ) -> None:
        super().__init__(state=state, prober=prober, metrics=metrics, admin=_NO_ADMIN,
                         app_metrics=app_metrics, app_host=app_host, on_quit=on_quit)  # fmt: skip
        self._bootstrap = bootstrap
        self.bootstrap_written = False

    async def not_ready_reason(self) -> str | None:
        if self._state.draining:
            return "the agent is stopping"
        if not self._state.has_certificate():
            return "no workload certificate yet"
        if not self.bootstrap_written:
            return f"the gRPC bootstrap {self._bootstrap} is not written yet"
        return None

    async def collect_metrics(self) -> str:
        scraped = []
        if self._app_metrics is not None:
            target = self._app_metrics
            scraped.append(await self._fetch_text(self._app_host, target.port, target.path, "app"))
        return merge_metrics([*scraped, self._metrics.render(now=self._clock())])


async def run_without_envoy(
    settings: AgentSettings, *, first_certificate: PendingAnswer | None = None
) -> int:
    """Serve certificates and the bootstrap to a proxyless gRPC app until asked to stop."""
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        bootstrap = render_grpc_bootstrap(settings)
    except GrpcBootstrapError as exc:
        log.error("cannot write the gRPC bootstrap: %s", exc)
        return 1
    files = certificate_files(settings)
    target = bootstrap_path(settings)
    control_plane = settings.control_plane
    metrics = AgentMetrics()
    certificates = certificate_manager(
        settings, metrics=metrics, output_dir=files.directory, first_certificate=first_certificate
    )
    state = AgentState(has_certificate=lambda: certificates.current is not None)
    app = NoEnvoyStatusApp(
        bootstrap=target,
        state=state,
        prober=Prober(settings.app_probers, default_host=settings.probe_host, metrics=metrics),
        metrics=metrics,
        app_metrics=settings.app_metrics,
        app_host=settings.probe_host,
        on_quit=stop.set,
    )
    status = StatusServer(app, host=settings.status_host, port=settings.ports.status)
    log.info("without Envoy: certificates to %s, gRPC bootstrap to %s (xDS at %s)",
             files.directory, target, control_plane.discovery_address)  # fmt: skip
    renewal: asyncio.Task[None] | None = None
    try:
        await status.start()
        if not await certificates.obtain(stop):
            return 0  # asked to stop before the first certificate
        # After the files it names: an app reading it finds every file in place.
        write_atomically(target, bootstrap, 0o644)
        app.bootstrap_written = True
        log.info("proxyless gRPC ready %.2fs after agent start", time.monotonic() - started)
        renewal = asyncio.create_task(certificates.keep_renewed(stop), name="renewal")
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({renewal, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if renewal.done() and renewal.exception() is not None:
            log.error("certificate renewal failed: %s", renewal.exception())
            return 1
        state.draining = True
        return 0
    except OSError as exc:
        log.error("%s", exc)
        return 1
    finally:
        stop.set()
        if renewal is not None:
            renewal.cancel()
            await asyncio.gather(renewal, return_exceptions=True)
        await status.stop()
        log.info("agent stopped")
