"""`sidemesh dashboard`: the live service graph in a browser, served on this machine.

sidemesh dashboard --prometheus http://127.0.0.1:9090   # any Prometheus scraping the mesh
sidemesh dashboard --local          # the one `sidemesh local prometheus start` runs
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from pathlib import Path

import click

from sidemesh.dashboard.promql import PrometheusClient, PrometheusError
from sidemesh.dashboard.queries import QueryError
from sidemesh.dashboard.server import DashboardServer, GraphSource

DEFAULT_PORT = 20001  # Kiali's


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@click.command("dashboard")
@click.option(
    "--prometheus",
    "prometheus_url",
    default="http://127.0.0.1:9090",
    show_default=True,
    help="The Prometheus that scrapes the sidecars (http://HOST[:PORT][/PREFIX]).",
)
@click.option(
    "--local",
    "use_local",
    is_flag=True,
    help="Use the local runtime's Prometheus (`sidemesh local prometheus start`).",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar="SIDEMESH_LOCAL_STATE",
    help="The local runtime's state directory (with --local).",
)
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to serve on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--window",
    default="1m",
    show_default=True,
    help="Rate window of every query (PromQL duration).",
)
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Allow a non-loopback --address (the dashboard has no login: anyone who reaches it "
    "reads your mesh's traffic).",
)
def dashboard(
    prometheus_url: str,
    use_local: bool,
    state_dir: Path | None,
    address: str,
    port: int,
    window: str,
    allow_remote: bool,
) -> None:
    """Serve the service graph: workloads, request rate, success rate, p50/p99, mTLS."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not _is_loopback(address) and not allow_remote:
        raise click.UsageError(
            f"--address {address} is not loopback; add --allow-remote to mean it"
        )
    try:
        if use_local:
            from sidemesh.local.prometheus import PrometheusUnavailable, local_prometheus_client

            try:
                client = local_prometheus_client(state_dir)
            except PrometheusUnavailable as exc:
                raise click.ClickException(str(exc)) from exc
        else:
            client = PrometheusClient.from_url(prometheus_url)
        source = GraphSource(client, window)
    except (PrometheusError, QueryError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    server = DashboardServer(source, address, port)
    click.echo(f"sidemesh dashboard on {server.url} (Prometheus {client.host}:{client.port})")
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
