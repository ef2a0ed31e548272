"""`sidemesh demo`: walk through the sidecar injection guide on this host, for real.

Each step shows the command as the guide types it (kubectl) and the `sidemesh local` command
run here, then checks the outcome (not just the output). Exit codes: 0 every step as the guide
says, 1 a step's outcome was wrong, 3 this host cannot run it (nothing is created),
130 interrupted (cleaned up). `--json` prints one object of every check's outcome on stdout
(the narration goes to stderr), with the same exit codes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from sidemesh.cli.console import make_console
from sidemesh.local.paths import state_dir_from

if TYPE_CHECKING:
    from rich.console import Console

DEFAULT_MANIFEST = Path(__file__).resolve().parents[3] / "examples" / "demo" / "demo.yaml"
EXIT_FAILED = 1
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130


@click.group("demo", invoke_without_command=True)
@click.option(
    "--keep",
    is_flag=True,
    help="Leave the mesh running at the end, to explore with `sidemesh local ...`.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The local runtime's state directory [default: /run/sidemesh-local].",
)
@click.option(
    "--manifest",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="The demo app [default: examples/demo/demo.yaml].",
)
@click.option(
    "--kube",
    is_flag=True,
    help="Against a real API server ($KUBEBUILDER_ASSETS) with kubectl, this host its node.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object of every check's outcome (the narration goes to stderr).",
)
@click.pass_context
def demo(
    ctx: click.Context,
    keep: bool,
    state_dir: Path | None,
    manifest: Path | None,
    kube: bool,
    as_json: bool,
) -> None:
    """Walk through sidecar injection: control plane, labels, restart, mTLS, upgrade,
    authorization by identity, and the golden signals of the demo's traffic.

    `sidemesh demo traffic` walks traffic management instead (canary, retries, timeout,
    circuit breaker, outlier ejection)."""
    if ctx.invoked_subcommand is not None:
        return
    from sidemesh.demo.runner import DemoSettings, environment_problems, report, run_demo

    console = make_console(stderr=as_json)
    problems = environment_problems()
    if problems:
        click.echo("sidemesh demo cannot run here:", err=True)
        for problem in problems:
            click.echo(f"  - {problem}", err=True)
        raise SystemExit(EXIT_UNAVAILABLE)
    app = manifest or DEFAULT_MANIFEST
    if not app.exists():
        click.echo(f"sidemesh demo: the demo app {app} is missing; pass --manifest", err=True)
        raise SystemExit(EXIT_UNAVAILABLE)
    if kube:
        _demo_kube(keep, state_dir, app, console, as_json=as_json)
        return
    directory = state_dir_from(state_dir)
    if (directory / "state.json").exists():
        click.echo(
            f"sidemesh demo: a local runtime is already running in {directory}; "
            "stop it with `sidemesh local down` or pass --state-dir",
            err=True,
        )
        raise SystemExit(EXIT_UNAVAILABLE)
    settings = DemoSettings(state_dir=directory, manifest=app, keep=keep)
    try:
        outcomes = run_demo(settings, console)
    except KeyboardInterrupt:
        click.echo("interrupted: cleaned up", err=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    if as_json:
        import orjson

        click.echo(orjson.dumps(report(outcomes, settings)).decode())
    if not outcomes or not all(o.ok for o in outcomes):
        raise SystemExit(EXIT_FAILED)
    if keep:
        console.print(
            f"The mesh is still running. Explore: `sidemesh local --state-dir {directory} "
            "get pods -n demo`; finish with `sidemesh local down`."
        )
    sys.stdout.flush()


def _demo_kube(
    keep: bool, state_dir: Path | None, app: Path, console: Console, *, as_json: bool
) -> None:
    """`demo --kube`: the guide against a real API server, this host its node; `--json`: the
    local demo's object of checks (`kube_report` says which keys it leaves out)."""
    from sidemesh.demo.kube_runner import KubeDemoSettings, leftovers, run_kube_demo
    from sidemesh.kube.testbed import TestbedError, find_assets

    try:
        find_assets()
    except TestbedError as exc:
        click.echo(f"sidemesh demo --kube cannot run here: {exc}", err=True)
        raise SystemExit(EXIT_UNAVAILABLE) from None
    directory = state_dir.absolute() if state_dir else Path("/run/sidemesh-kube-demo")
    settings = KubeDemoSettings(state_dir=directory, manifest=app, keep=keep)
    try:
        outcomes = run_kube_demo(settings, console)
    except KeyboardInterrupt:
        click.echo("interrupted: cleaned up", err=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    if as_json:
        import orjson

        from sidemesh.demo.kube_report import checks

        cleaned_up = None if keep and all(o.ok for o in outcomes) else not leftovers(settings)
        click.echo(orjson.dumps(checks(outcomes, cleaned_up=cleaned_up)).decode())
    if not outcomes or not all(o.ok for o in outcomes):
        raise SystemExit(EXIT_FAILED)
    sys.stdout.flush()


@demo.command("traffic")
@click.option("--keep", is_flag=True, help="Leave the mesh running at the end.")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The local runtime's state directory [default: /run/sidemesh-local].",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object of the measured outcomes (the narration goes to stderr).",
)
def traffic(keep: bool, state_dir: Path | None, as_json: bool) -> None:
    """Walk a canary on this host: v1 -> 90/10 -> 50/50 -> v2, retries hiding a faulty
    version, a timeout, a circuit breaker, outlier ejection, the ingress gateway and outbound
    REGISTRY_ONLY (a ServiceEntry's host passes, an undeclared one is refused), each outcome
    measured."""
    import orjson
    from rich.console import Console

    from sidemesh.demo.runner import DemoSettings, environment_problems
    from sidemesh.demo.traffic import run_traffic_demo

    problems = environment_problems()
    if problems:
        click.echo("sidemesh demo traffic cannot run here:", err=True)
        for problem in problems:
            click.echo(f"  - {problem}", err=True)
        raise SystemExit(EXIT_UNAVAILABLE)
    directory = state_dir_from(state_dir)
    if (directory / "state.json").exists():
        click.echo(
            f"sidemesh demo traffic: a local runtime is already running in {directory}; "
            "stop it with `sidemesh local down` or pass --state-dir",
            err=True,
        )
        raise SystemExit(EXIT_UNAVAILABLE)
    console = Console(stderr=True) if as_json else make_console()
    settings = DemoSettings(state_dir=directory, manifest=DEFAULT_MANIFEST, keep=keep)
    try:
        outcomes = run_traffic_demo(settings, console)
    except KeyboardInterrupt:
        click.echo("interrupted: cleaned up", err=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    if as_json:
        click.echo(orjson.dumps(outcomes.as_dict()).decode())
    sys.stdout.flush()
    if not outcomes.ok:
        raise SystemExit(EXIT_FAILED)
