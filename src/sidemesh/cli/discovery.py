"""`sidemesh discovery`: the control plane process (istiod's role). Today it serves the sidecar
injection webhook on :15017.

Everything that can be wrong with the configuration is checked before the port is bound, so a
bad file fails the rollout at once (exit 2, the message naming the file) instead of producing
a server that denies every pod.
"""

from __future__ import annotations

import gc
import logging
import os
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import click

from sidemesh.api.config import ConfigError

log = logging.getLogger("sidemesh.discovery")

_FILE = click.Path(dir_okay=False, path_type=Path)


@click.command("discovery")
@click.option(
    "--tls-cert-file",
    type=_FILE,
    help="Serving certificate (PEM). Required without --kube; with --kube discovery writes "
    "it itself (default: a private directory of its own).",
)
@click.option("--tls-key-file", type=_FILE, help="Serving private key (PEM); see --tls-cert-file.")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=15017, show_default=True, help="HTTPS port."
)
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--injector-config", type=_FILE, help="Injector config (Istio's `config` key).")
@click.option(
    "--mesh-config",
    type=_FILE,
    help="MeshConfig (YAML). With --registry-file it is re-read when it changes.",
)
@click.option("--values", type=_FILE, help="Injector values (YAML).")
@click.option("--revision", default="default", show_default=True, help="Control-plane revision.")
@click.option(
    "--kube",
    is_flag=True,
    help="In a cluster: own the webhook certificate (in a Secret), keep caBundle correct, "
    "elect a leader for these duties.",
)
@click.option(
    "--kubeconfig",
    type=_FILE,
    default=None,
    help="With --kube: kubeconfig file (default: in-cluster service account, $KUBECONFIG, "
    "~/.kube/config).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="Least severe log level shown (debug includes every Kubernetes API request).",
)
@click.option(
    "--registry-file",
    "registry_files",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Single host: Service/EndpointSlice/PeerAuthentication YAML (file or directory, "
    "repeatable), watched for changes. Enables xDS and the CA.",
)
@click.option(
    "--ca-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Single host: the mesh CA's directory (Istio's cacerts layout; created when empty).",
)
@click.option(
    "--token-file",
    type=_FILE,
    help="Single host: service-account tokens issued by "
    "the local runtime, for authenticating certificate requests.",
)
@click.option(
    "--xds-port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Plaintext, unauthenticated xDS port, e.g. 15010 (0: off). Only for trusted networks: "
    "anyone who reaches it reads the whole mesh configuration.",
)
@click.option(
    "--xds-tls-port",
    type=click.IntRange(0, 65535),
    default=15012,
    show_default=True,
    help="xDS + CA over TLS port (0: off).",
)
@click.option(
    "--monitoring-port",
    type=click.IntRange(0, 65535),
    default=15014,
    show_default=True,
    help="Metrics and proxy status port (0: off).",
)
@click.option(
    "--sidecar-restarter",
    is_flag=True,
    help="With --kube: restart workloads whose sidecar is stale (leader only, evictions).",
)
def discovery(
    *,
    tls_cert_file: Path | None,
    tls_key_file: Path | None,
    port: int,
    host: str,
    injector_config: Path | None,
    mesh_config: Path | None,
    values: Path | None,
    revision: str,
    kube: bool,
    kubeconfig: Path | None,
    log_level: str,
    registry_files: tuple[Path, ...],
    ca_dir: Path | None,
    token_file: Path | None,
    xds_port: int,
    xds_tls_port: int,
    monitoring_port: int,
    sidecar_restarter: bool = False,
) -> None:
    """Run the control plane: the sidecar injection webhook over HTTPS."""
    # First, so that everything below (the certificate Secret, the Lease, caBundle) is logged.
    configure_logging(log_level)
    tls_cert_file, tls_key_file = _serving_files(tls_cert_file, tls_key_file, kube=kube)
    if kubeconfig is not None and not kube:
        raise click.UsageError("--kubeconfig needs --kube")
    if sidecar_restarter and not kube:
        raise click.UsageError("--sidecar-restarter needs --kube")
    # Imported here so that `sidemesh --help` does not load the engine or uvicorn.
    from sidemesh.cli.validate import GROUP_CHECKS
    from sidemesh.inject.engine import Injector
    from sidemesh.inject.template import TemplateError
    from sidemesh.webhook.app import WebhookApp
    from sidemesh.webhook.server import serve_https
    from sidemesh.webhook.tls import build_server_context

    try:
        injector = Injector.from_files(
            revision=revision,
            injector_config=injector_config,
            mesh_config=mesh_config,
            values=values,
            server_version=read_server_version(kubeconfig) if kube else None,
        )
    except (ConfigError, TemplateError) as exc:
        _fail(str(exc))
    extra_metrics: tuple[Callable[[], bytes], ...] = ()
    duties = None
    if kube:
        # Returns once the serving pair exists in the files below (created or loaded from the
        # cluster); the duties then run on their own thread, retrying while the API is away.
        from sidemesh.kube.duties import DutySettings, LeaderDuty, start_cluster_duties
        from sidemesh.kube.metrics import KUBE_METRICS
        from sidemesh.kube.webhook_certs import CertPolicy, parse_custom_hosts

        # Istio's ISTIOD_CUSTOM_HOST: more names for the webhook's serving certificate.
        custom_hosts = parse_custom_hosts(os.environ.get("ISTIOD_CUSTOM_HOST", ""))
        leader_extras: tuple[LeaderDuty, ...] = ()
        if sidecar_restarter:
            from sidemesh.rollout.duty import RestarterDuty
            from sidemesh.rollout.metrics import RESTARTER_METRICS

            leader_extras = (RestarterDuty(),)
            extra_metrics = (RESTARTER_METRICS.render,)
        duties = start_cluster_duties(
            DutySettings(
                revision=revision,
                cert_file=tls_cert_file,
                key_file=tls_key_file,
                policy=CertPolicy(custom_hosts=custom_hosts),
                kubeconfig=kubeconfig,
                leader_extras=leader_extras,
            )
        )
        extra_metrics = (KUBE_METRICS.render, *extra_metrics)
    if kube or registry_files or ca_dir is not None:
        # xDS, the CA and the registry, on their own thread and loop (see xds.launch).
        from sidemesh.xds.launch import LaunchError, MeshServing, start_control_plane

        try:
            mesh_plane = start_control_plane(
                MeshServing(
                    revision=revision,
                    mesh=injector.settings.mesh,
                    host=host,
                    plaintext_port=xds_port or None,
                    tls_port=xds_tls_port or None,
                    monitoring_port=monitoring_port or None,
                    registry_files=registry_files,
                    # Single host: changes to the file reach the proxies without a restart.
                    mesh_file=mesh_config,
                    ca_dir=ca_dir,
                    token_file=token_file,
                    kube=kube,
                    kubeconfig=kubeconfig,
                )
            )
        except LaunchError as exc:
            _fail(str(exc))
        extra_metrics = (*extra_metrics, mesh_plane.render_metrics)
    try:
        context = build_server_context(tls_cert_file, tls_key_file)
    except OSError as exc:  # includes ssl.SSLError
        reason = exc.strerror if exc.strerror and not isinstance(exc, ssl.SSLError) else exc
        _fail(f"{tls_cert_file}, {tls_key_file}: cannot load the TLS certificate and key: {reason}")

    log.info("sidecar injection webhook starting: revision=%s port=%d", revision, port)
    # Everything loaded so far lives as long as the process: keep the cyclic collector from
    # rescanning it on every collection of the request path's short-lived objects.
    gc.freeze()
    try:
        serve_https(
            # /validate checks Istio configuration with `sidemesh validate`'s group checks.
            WebhookApp(injector, extra_metrics=extra_metrics, validation=GROUP_CHECKS),
            host=host,
            port=port,
            cert_file=tls_cert_file,
            key_file=tls_key_file,
            context=context,
        )
    finally:
        if duties is not None:
            # SIGTERM ends serve_https: give the Lease up (client-go's ReleaseOnCancel) so a
            # successor takes over at once instead of a whole lease term later.
            duties.stop(timeout=10.0)
            log.info("cluster duties stopped")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    from sidemesh.kube.client import log_requests_at_debug

    log_requests_at_debug()


def _serving_files(
    cert_file: Path | None, key_file: Path | None, *, kube: bool
) -> tuple[Path, Path]:
    """The serving pair's files: as given, or (with --kube, which writes them) a private
    directory of this process's own."""
    if cert_file is not None and key_file is not None:
        return cert_file, key_file
    if not kube or (cert_file is None) != (key_file is None):
        raise click.UsageError(
            "--tls-cert-file and --tls-key-file are required"
            + (" together" if kube else " (or --kube, which creates them)")
        )
    directory = Path(tempfile.mkdtemp(prefix="sidemesh-webhook-"))  # mode 0700
    log.info("webhook serving certificate and key go to %s", directory)
    return directory / "tls.crt", directory / "tls.key"


def read_server_version(kubeconfig: Path | None, attempts: int = 5) -> tuple[int, int] | None:
    """The API server's Kubernetes version, read once at start (what the injector may use,
    e.g. native sidecars); None (logged) if the server cannot say."""
    import asyncio

    from sidemesh.kube.client import ClusterAccessError, describe_error, make_client, server_version
    from sidemesh.kube.retry import DEFAULT_BACKOFF

    async def read() -> tuple[int, int] | None:
        delays = DEFAULT_BACKOFF.delays()
        async with make_client(kubeconfig) as client:
            for attempt in range(1, attempts + 1):
                try:
                    return await server_version(client)
                except Exception as exc:
                    failure = describe_error(exc)
                    if attempt == attempts:
                        log.warning(
                            "cannot read the Kubernetes version (%s); pods are injected as "
                            "configured, e.g. native sidecars even where the server has none",
                            failure,
                        )
                        return None
                    log.warning("reading the Kubernetes version failed, again: %s", failure)
                    await asyncio.sleep(next(delays))
        return None

    try:
        version = asyncio.run(read())
    except ClusterAccessError as exc:
        _fail(str(exc))
    if version is not None:
        log.info("Kubernetes API server version %d.%d", *version)
    return version


def _fail(message: str) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    raise SystemExit(2)
