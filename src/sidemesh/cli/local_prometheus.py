"""`sidemesh local prometheus start|stop|status`: a real Prometheus scraping the runtime's pods.

It runs in the node's network namespace and listens on the node's loopback; read it with
`sidemesh dashboard --local`. `sidemesh local down` stops it with everything else on the node.
"""

from __future__ import annotations

import click

from sidemesh.local.prometheus import (
    SCRAPE_INTERVAL,
    LocalPrometheus,
    PrometheusUnavailable,
    describe,
    scrape_targets,
    write_targets,
)
from sidemesh.local.runtime import Runtime, RuntimeUnavailable


def _local(ctx: click.Context) -> tuple[Runtime, LocalPrometheus]:
    runtime = ctx.find_object(Runtime)
    assert runtime is not None  # set by the `local` group
    try:
        runtime.check()
    except RuntimeUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    if not runtime.store.exists():
        raise click.ClickException("the local runtime is not running (sidemesh local apply ...)")
    return runtime, LocalPrometheus.for_runtime(runtime.paths.root)


@click.group("prometheus")
def local_prometheus() -> None:
    """A Prometheus on the node that scrapes pods by their prometheus.io/* annotations."""


@local_prometheus.command("start")
@click.option(
    "--scrape-interval", default=SCRAPE_INTERVAL, show_default=True, help="PromQL duration."
)
@click.pass_context
def start_command(ctx: click.Context, scrape_interval: str) -> None:
    """Start it (no-op when running) and wait until it is ready."""
    runtime, prometheus = _local(ctx)
    state = runtime.read()
    if state is not None and not prometheus.paths.pod_targets.exists():
        write_targets(runtime.paths, state.pods.values())  # the daemon keeps it current
    try:
        pid = prometheus.start(scrape_interval=scrape_interval)
    except PrometheusUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"prometheus running (pid {pid}) on {prometheus.host}:{prometheus.port} in network "
        f"namespace {prometheus.netns}; see it with: sidemesh dashboard --local"
    )


@local_prometheus.command("stop")
@click.pass_context
def stop_command(ctx: click.Context) -> None:
    """Stop it (its data stays until `sidemesh local down`)."""
    _, prometheus = _local(ctx)
    click.echo("prometheus stopped" if prometheus.stop() else "prometheus was not running")


@local_prometheus.command("status")
@click.pass_context
def status_command(ctx: click.Context) -> None:
    """Whether it runs, and which pods it scrapes (or why not)."""
    runtime, prometheus = _local(ctx)
    pid = prometheus.pid()
    click.echo(f"prometheus: running (pid {pid})" if pid else "prometheus: not running")
    state = runtime.read()
    for line in describe(scrape_targets(state.pods.values() if state else [])):
        click.echo(line)
