"""Run the mesh side of `sidemesh discovery` — xDS, the CA and the registry — next to the
webhook.

The webhook owns the main thread's uvloop; gRPC's asyncio integration wants a plain asyncio
loop, so the control plane gets a thread and loop of its own. `start_control_plane` returns
once every port is bound (or raises what went wrong), so the process fails fast on a port in
use or an unreadable registry instead of serving half a control plane.

Two environments, one shape:
* single host: registry from files, CA in a directory (Istio's `cacerts` layout), callers
  authenticated by a token file issued by the local runtime;
* Kubernetes: registry from watches, CA in the `istio-ca-secret` Secret, callers authenticated
  by TokenReview, and the root published as `istio-ca-root-cert` in every namespace.

In both, a self-signed root (one the control plane created, not a plugged-in `cacerts`) is
renewed before it expires (`security/rotator.py`); the CA service, the :15012 TLS context and
the published roots follow the renewed root, on every replica.
"""

# mypy: disable-error-code="import-untyped"

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidemesh.api.config import MeshConfig
from sidemesh.security.authn import Authenticator, LocalTokenAuthenticator
from sidemesh.security.ca import CertificateAuthority
from sidemesh.security.rootcert import PublishedRoot
from sidemesh.security.rotator import RootRotator
from sidemesh.security.store import CaStore, DirectoryCaStore, load_or_create_ca
from sidemesh.xds.server import ControlPlaneConfig, ControlPlaneServer, Registry

log = logging.getLogger("sidemesh.xds.launch")


class LaunchError(Exception):
    """The control plane could not start; the message says why."""


@dataclass(frozen=True)
class MeshServing:
    revision: str
    mesh: MeshConfig
    host: str = "0.0.0.0"
    plaintext_port: int | None = None  # plaintext, unauthenticated xDS: only when asked for
    tls_port: int | None = 15012
    monitoring_port: int | None = 15014
    # Single host:
    registry_files: tuple[Path, ...] = ()
    mesh_file: Path | None = None  # where `mesh` came from: re-read when it changes
    ca_dir: Path | None = None
    token_file: Path | None = None
    # Kubernetes:
    kube: bool = False
    kubeconfig: Path | None = None


@dataclass
class ControlPlaneHandle:
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop
    server: ControlPlaneServer
    stop_event: asyncio.Event

    @property
    def ports(self) -> dict[str, int]:
        return dict(self.server.ports)

    def render_metrics(self) -> bytes:
        return self.server.render_metrics().encode()

    def stop(self, timeout: float = 5.0) -> None:
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(timeout)


def _local_parts(settings: MeshServing) -> tuple[CaStore, Authenticator, Registry, list[Any]]:
    from sidemesh.xds.registry_files import FileRegistry

    if settings.ca_dir is None or settings.token_file is None:
        raise LaunchError("serving xDS from files needs --ca-dir and --token-file")
    return (
        DirectoryCaStore(settings.ca_dir),
        LocalTokenAuthenticator(settings.token_file),
        FileRegistry(settings.registry_files, mesh=settings.mesh, mesh_file=settings.mesh_file),
        [],
    )


def _kube_parts(settings: MeshServing) -> tuple[CaStore, Authenticator, Registry, list[Any]]:
    from sidemesh.install import naming
    from sidemesh.kube.client import make_client
    from sidemesh.security.authn import TokenReviewAuthenticator
    from sidemesh.security.store import KubernetesSecretStore
    from sidemesh.xds.mesh_reload_kube import MeshConfigMap
    from sidemesh.xds.registry_kube import KubeRegistry

    client = make_client(settings.kubeconfig)
    # The revision's mesh ConfigMap, followed live (the mounted mesh file comes from it).
    mesh_config_map = MeshConfigMap(naming.NAMESPACE, naming.mesh_configmap_name(settings.revision))
    return (
        KubernetesSecretStore(client),
        TokenReviewAuthenticator(client),
        KubeRegistry(client, mesh=settings.mesh, mesh_config_map=mesh_config_map),
        [client],
    )


async def _run(
    settings: MeshServing,
    started: Callable[[ControlPlaneServer | BaseException], None],
    stop_event: asyncio.Event,
) -> None:
    try:
        parts = _kube_parts(settings) if settings.kube else _local_parts(settings)
        store, authenticator, registry, clients = parts
        ca = await load_or_create_ca(
            store,
            trust_domain=settings.mesh.trust_domain,
            now=datetime.datetime.now(datetime.UTC),
        )
        server = ControlPlaneServer(
            config=ControlPlaneConfig(
                host=settings.host,
                plaintext_port=settings.plaintext_port,
                tls_port=settings.tls_port,
                monitoring_port=settings.monitoring_port,
                revision=settings.revision,
            ),
            ca=ca,
            authenticator=authenticator,
            registry=registry,
        )
        await server.start()
    except BaseException as exc:  # reported to the starting thread, which fails the process
        started(exc)
        return
    published = PublishedRoot(ca.root_pem())

    def follow_ca(renewed: CertificateAuthority) -> None:
        server.use_ca(renewed)
        published.update(renewed.root_pem())

    rotator = RootRotator(store, ca=ca, on_change=follow_ca)
    tasks: list[asyncio.Task[None]] = [asyncio.create_task(rotator.run())]
    if settings.kube:
        from sidemesh.security.rootcert import publish_root_cert

        tasks.append(asyncio.create_task(publish_root_cert(clients[0], published)))
    started(server)
    try:
        await stop_event.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.stop()


def start_control_plane(settings: MeshServing, *, timeout: float = 120.0) -> ControlPlaneHandle:
    """Start xDS + CA + registry on a thread; return once serving. Raises LaunchError."""
    outcome: list[ControlPlaneServer | BaseException] = []
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop_event_box: list[asyncio.Event] = []

    def started(result: ControlPlaneServer | BaseException) -> None:
        outcome.append(result)
        ready.set()

    def main() -> None:
        asyncio.set_event_loop(loop)
        stop_event = asyncio.Event()
        stop_event_box.append(stop_event)
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(_run(settings, started, stop_event))
        loop.close()

    thread = threading.Thread(target=main, name="sidemesh-control-plane", daemon=True)
    thread.start()
    if not ready.wait(timeout):
        raise LaunchError(f"control plane did not start within {timeout:.0f} s")
    result = outcome[0]
    if isinstance(result, BaseException):
        thread.join(5)
        raise LaunchError(f"control plane could not start: {result}") from result
    return ControlPlaneHandle(thread, loop, result, stop_event_box[0])
