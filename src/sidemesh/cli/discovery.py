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
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import click

from sidemesh.api.config import ConfigError

log = logging.getLogger("sidemesh.discovery")

_FILE = click.Path(dir_okay=False, path_type=Path)


@click.command("discovery")
@click.option("--tls-cert-file", type=_FILE, required=True, help="Serving certificate (PEM).")
@click.option("--tls-key-file", type=_FILE, required=True, help="Serving private key (PEM).")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=15017, show_default=True, help="HTTPS port."
)
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--injector-config", type=_FILE, help="Injector config (Istio's `config` key).")
@click.option("--mesh-config", type=_FILE, help="MeshConfig (YAML).")
@click.option("--values", type=_FILE, help="Injector values (YAML).")
@click.option("--revision", default="default", show_default=True, help="Control-plane revision.")
@click.option(
    "--kube",
    is_flag=True,
    help="In a cluster: own the webhook certificate (in a Secret), keep caBundle correct, "
    "elect a leader for these duties.",
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
def discovery(
    *,
    tls_cert_file: Path,
    tls_key_file: Path,
    port: int,
    host: str,
    injector_config: Path | None,
    mesh_config: Path | None,
    values: Path | None,
    revision: str,
    kube: bool,
    registry_files: tuple[Path, ...],
    ca_dir: Path | None,
    token_file: Path | None,
    xds_port: int,
    xds_tls_port: int,
    monitoring_port: int,
) -> None:
    """Run the control plane: the sidecar injection webhook over HTTPS."""
    # Imported here so that `sidemesh --help` does not load the engine or uvicorn.
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
        )
    except (ConfigError, TemplateError) as exc:
        _fail(str(exc))
    extra_metrics: tuple[Callable[[], bytes], ...] = ()
    if kube:
        # Returns once the serving pair exists in the files below (created or loaded from the
        # cluster); the duties then run on their own thread, retrying while the API is away.
        from sidemesh.kube.duties import DutySettings, start_cluster_duties
        from sidemesh.kube.metrics import KUBE_METRICS
        from sidemesh.kube.webhook_certs import CertPolicy, parse_custom_hosts

        # Istio's ISTIOD_CUSTOM_HOST: more names for the webhook's serving certificate.
        custom_hosts = parse_custom_hosts(os.environ.get("ISTIOD_CUSTOM_HOST", ""))
        start_cluster_duties(
            DutySettings(
                revision=revision,
                cert_file=tls_cert_file,
                key_file=tls_key_file,
                policy=CertPolicy(custom_hosts=custom_hosts),
            )
        )
        extra_metrics = (KUBE_METRICS.render,)
    if kube or registry_files or ca_dir is not None:
        # xDS, the CA and the registry, on their own thread and loop (see xds.launch).
        from sidemesh.xds.launch import LaunchError, MeshServing, start_control_plane

        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
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
                    ca_dir=ca_dir,
                    token_file=token_file,
                    kube=kube,
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

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    log.info("sidecar injection webhook starting: revision=%s port=%d", revision, port)
    # Everything loaded so far lives as long as the process: keep the cyclic collector from
    # rescanning it on every collection of the request path's short-lived objects.
    gc.freeze()
    serve_https(
        WebhookApp(injector, extra_metrics=extra_metrics),
        host=host,
        port=port,
        cert_file=tls_cert_file,
        key_file=tls_key_file,
        context=context,
    )


def _fail(message: str) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    raise SystemExit(2)
