"""`sidemesh install` / `sidemesh uninstall`: one control-plane revision in istio-system.

Values are read and checked completely (files, `--set` keys, revision name) before the cluster
is contacted, so a typo never leaves a half-applied install.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

from sidemesh.api.config import ConfigError

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def cluster_options(function: F) -> F:
    """`--kubeconfig` and `--context`, shared by the commands that talk to a cluster."""
    function = click.option(
        "--context", default=None, help="kubeconfig context (default: the current one)."
    )(function)
    return click.option(
        "--kubeconfig",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="kubeconfig file (default: in-cluster, $KUBECONFIG, ~/.kube/config).",
    )(function)


def run_against_cluster(
    kubeconfig: Path | None, context: str | None, work: Callable[[Any], Awaitable[T]]
) -> T:
    """Run `work(client)` with a lightkube client; API trouble becomes a one-line error."""
    from sidemesh.analyze.live_check import LiveCheckError
    from sidemesh.install.tags import TagError
    from sidemesh.kube.client import ClusterAccessError, describe_error, make_client
    from sidemesh.kube.installer import InstallError

    async def main() -> T:
        async with make_client(kubeconfig, context) as client:
            return await work(client)

    try:
        return asyncio.run(main())
    except (ClusterAccessError, InstallError, TagError, LiveCheckError) as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:
        import httpx2

        if isinstance(exc, httpx2.HTTPError):
            raise click.ClickException(describe_error(exc)) from exc
        raise


def dump(objects: list[dict[str, Any]], output: str) -> str:
    if output == "json":
        document = {"apiVersion": "v1", "kind": "List", "items": objects}
        return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()
    from sidemesh.cli.manifests import dump_documents

    return dump_documents(objects)


@click.command("install")
@click.option(
    "--revision", default=None, help="Control-plane revision (default: values, else default)."
)
@click.option(
    "-f", "--filename", "files", multiple=True,
    type=click.Path(dir_okay=False, path_type=Path), help="Values file (repeatable, later wins).",
)  # fmt: skip
@click.option("--set", "sets", multiple=True, help="Override one value: key.path=value.")
@click.option("--dry-run", is_flag=True, help="Print the objects instead of applying them.")
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default=None)
@click.option(
    "--print-scrape-config", is_flag=True,
    help="Print a ConfigMap with the Prometheus job that scrapes every sidecar, and exit.",
)  # fmt: skip
@cluster_options
def install(
    revision: str | None, files: tuple[Path, ...], sets: tuple[str, ...], dry_run: bool,
    output: str | None, kubeconfig: Path | None, context: str | None,
    print_scrape_config: bool = False,
) -> None:  # fmt: skip
    """Install (or upgrade) one control-plane revision with server-side apply."""
    if print_scrape_config:
        from sidemesh.install import prometheus

        text = dump([prometheus.scrape_config_map()], output) if output == "json" else None
        click.echo(text or prometheus.scrape_config_map_yaml(), nl=False)
        return
    from sidemesh.install.manifests import render
    from sidemesh.install.overrides import load_install_values

    try:
        values, chosen = load_install_values(list(files), list(sets), revision=revision)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if dry_run:
        click.echo(dump(render(values, chosen), output or "yaml"), nl=False)
        return

    from sidemesh.kube import installer

    def report(line: str) -> None:
        if output is None:
            click.echo(line)

    applied = run_against_cluster(
        kubeconfig, context, lambda c: installer.install(c, values, chosen, report=report)
    )
    if output is not None:
        click.echo(dump(applied, output), nl=False)
    else:
        click.echo(
            f"revision {chosen} installed; enable injection with: kubectl label namespace "
            f"NAMESPACE istio-injection- istio.io/rev={chosen} --overwrite"
        )


@click.command("uninstall")
@click.option("--revision", required=True, help="The revision to remove.")
@click.option(
    "--keep-namespace", is_flag=True,
    help="Keep istio-system even when no revision is left in it.",
)  # fmt: skip
@cluster_options
def uninstall(
    revision: str, keep_namespace: bool, kubeconfig: Path | None, context: str | None
) -> None:
    """Remove exactly what `install --revision REV` created; other revisions are untouched."""
    from sidemesh.kube import installer

    deleted = run_against_cluster(
        kubeconfig,
        context,
        lambda c: installer.uninstall(
            c, revision, keep_namespace=keep_namespace, report=click.echo
        ),
    )
    if not deleted:
        click.echo(f"nothing of revision {revision} found")
