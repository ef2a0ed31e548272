"""`sidemesh local ...`: Kubernetes' workflow on one Linux host, with kubectl's syntax.

sidemesh local control-plane start --revision asm-173-3
sidemesh local apply -f app.yaml
sidemesh local get pods -n istio-system -l app=istiod --show-labels
sidemesh local label namespace demo istio-injection- istio.io/rev=asm-173-3 --overwrite
sidemesh local rollout restart deployment -n demo
sidemesh local get pods -n demo
sidemesh local down

sidemesh local node --kubeconfig F    # this host as a Node of a real API server
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click

from sidemesh.cli.local_prometheus import local_prometheus
from sidemesh.cli.proxy_status import local_proxy_status
from sidemesh.local import apiserver
from sidemesh.local.admission import AdmissionError
from sidemesh.local.controlplane import ControlPlaneOptions
from sidemesh.local.labels import LabelError, parse_label_args
from sidemesh.local.listing import GetRequest, get
from sidemesh.local.manifests import RESOURCE_WORDS, ManifestError, load, named_objects
from sidemesh.local.model import PodRecord
from sidemesh.local.paths import STATE_DIR_ENV, state_dir_from
from sidemesh.local.runtime import Runtime, RuntimeUnavailable
from sidemesh.local.store import StateError
from sidemesh.local.supervisor import DaemonError, daemon_running

DELETE_TIMEOUT_SECONDS = 60.0
_namespace = click.option(
    "-n", "--namespace", default="default", show_default=True, help="Namespace."
)


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(message, err=True)
    raise SystemExit(code)


def _runtime(ctx: click.Context, *, need_state: bool = False) -> Runtime:
    runtime = ctx.find_object(Runtime)
    assert runtime is not None  # set by the `local` group
    try:
        runtime.check()
    except RuntimeUnavailable as exc:
        _fail(str(exc))
    if need_state and not runtime.store.exists():
        runtime.init()
    return runtime


def _load(files: tuple[str, ...], *, verb: str) -> list[tuple[str, list[Any]]]:
    if not files:
        return []
    try:
        return load(files, verb=verb)
    except ManifestError as exc:
        _fail(str(exc))


def _kind(word: str) -> str:
    kind = RESOURCE_WORDS.get(word.lower())
    if kind is None:
        _fail(f'error: the server doesn\'t have a resource type "{word}"')
    return kind


@click.group("local")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar=STATE_DIR_ENV,
    help="Where the runtime keeps its state [default: /run/sidemesh-local].",
)
@click.pass_context
def local(ctx: click.Context, state_dir: Path | None) -> None:
    """Run pods, services and control planes on this host (network namespaces, no cluster)."""
    ctx.obj = Runtime(state_dir_from(state_dir))


@local.command("apply")
@click.option(
    "-f", "--filename", "files", multiple=True, required=True, help="Manifest (- = stdin)."
)
@_namespace
@click.pass_context
def apply_command(ctx: click.Context, files: tuple[str, ...], namespace: str) -> None:
    """Create or update objects from manifests (starts the runtime on first use).

    Every document of every file is read and checked first: if one is refused, nothing is
    applied."""
    loaded = _load(files, verb="apply")  # before the runtime: bad input changes nothing
    runtime = _runtime(ctx, need_state=True)
    state = runtime.read()
    refused = (
        apiserver.refused_objects(state, loaded, now=time.time(), default_namespace=namespace)
        if state is not None
        else []
    )
    if refused:
        click.echo("".join(f"{error}\n" for error in refused), nl=False, err=True)
        _fail(f"error: nothing was applied: {len(refused)} refused (above)")
    failed = False
    for source, documents in loaded:
        lines, errors = runtime.apply(documents, source=source, default_namespace=namespace)
        for line in lines:
            click.echo(line)
        for error in errors:
            click.echo(error, err=True)
        failed = failed or any(not e.startswith("Warning: ") for e in errors)
    _start(runtime)
    if failed:
        raise SystemExit(1)


def _start(runtime: Runtime) -> None:
    try:
        runtime.start()
    except DaemonError as exc:
        _fail(f"error: {exc}")
    runtime.wake()


@local.command("label")
@click.argument("resource")
@click.argument("name")
@click.argument("labels", nargs=-1, required=True)
@click.option("--overwrite", is_flag=True, help="Allow changing existing labels.")
@click.pass_context
def label_command(
    ctx: click.Context, resource: str, name: str, labels: tuple[str, ...], overwrite: bool
) -> None:
    """Update a namespace's labels: `k=v` sets, `k-` removes (kubectl's syntax)."""
    if _kind(resource) != "Namespace":
        _fail("error: sidemesh local labels namespaces only")
    runtime = _runtime(ctx, need_state=True)
    try:
        update = parse_label_args(labels)
        with runtime.store.transaction() as state:
            result = apiserver.label_namespace(state, name, update, overwrite=overwrite)
    except (LabelError, apiserver.ApiError) as exc:
        _fail(str(exc) if str(exc).startswith(("error", "Error")) else f"error: {exc}")
    for note in result.notes:
        click.echo(note)
    click.echo(f"namespace/{name} {'labeled' if result.changed else 'not labeled'}")
    _start(runtime)


@local.group("rollout")
def rollout() -> None:
    """Manage the rollout of deployments."""


@rollout.command("restart")
@click.argument("resource")
@click.argument("names_", metavar="[NAME]...", nargs=-1)
@_namespace
@click.pass_context
def restart_command(
    ctx: click.Context, resource: str, names_: tuple[str, ...], namespace: str
) -> None:
    """Restart deployments: new pods (admitted with the namespace's current labels)."""
    if _kind(resource) != "Deployment":
        _fail(f'error: restarting is not supported for "{resource}" locally')
    runtime = _runtime(ctx, need_state=True)
    try:
        with runtime.store.transaction() as state:
            lines = apiserver.rollout_restart(state, namespace, names_, time.time())
    except apiserver.ApiError as exc:
        _fail(str(exc))
    if not lines:
        _fail(f"No resources found in {namespace} namespace.")
    for line in lines:
        click.echo(line)
    _start(runtime)


@local.command("delete")
@click.argument("resource", required=False)
@click.argument("names_", metavar="[NAME]...", nargs=-1)
@_namespace
@click.option("--all", "everything", is_flag=True, help="Every pod of the namespace.")
@click.option("-f", "--filename", "files", multiple=True, help="Delete what a manifest names.")
@click.option("--grace-period", type=int, default=None, help="Seconds before SIGKILL.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until gone.")
@click.pass_context
def delete_command(
    ctx: click.Context,
    resource: str | None,
    names_: tuple[str, ...],
    namespace: str,
    everything: bool,
    files: tuple[str, ...],
    grace_period: int | None,
    wait: bool,
) -> None:
    """Delete pods (gracefully), deployments, services, namespaces..."""
    runtime = _runtime(ctx, need_state=True)
    targets = [
        t
        for _, documents in _load(files, verb="delete")
        for t in named_objects(documents, namespace)
    ]
    if resource:
        kind = _kind(resource)
        if kind == "Pod":
            try:
                deleted = runtime.delete_pods(
                    namespace, list(names_), everything=everything, grace=grace_period
                )
            except apiserver.ApiError as exc:
                _fail(str(exc))
            if not deleted:
                click.echo(f"No resources found in {namespace} namespace.", err=True)
            for name in deleted:
                click.echo(f'pod "{name}" deleted')
            _start(runtime)
            if (
                wait
                and deleted
                and not runtime.wait_pods_gone(namespace, deleted, DELETE_TIMEOUT_SECONDS)
            ):
                _fail("error: timed out waiting for the pods to be deleted")
            return
        targets += [(kind, namespace, name) for name in names_]
    if not targets:
        _fail("error: resource(s) were provided, but no name was specified")
    lines, errors = runtime.delete_objects(targets)
    _start(runtime)
    click.echo("".join(f"{line}\n" for line in lines), nl=False)
    click.echo("".join(f"{error}\n" for error in errors), nl=False, err=True)
    if errors:
        raise SystemExit(1)


@local.command("get")
@click.argument("resource")
@click.argument("names_", metavar="[NAME]...", nargs=-1)
@_namespace
@click.option("-A", "--all-namespaces", is_flag=True, help="Every namespace.")
@click.option("-l", "--selector", default="", help="Label selector (kubectl syntax).")
@click.option("--show-labels", is_flag=True, help="Add a LABELS column.")
@click.option("-o", "--output", type=click.Choice(["wide", "yaml", "json", "name"]), default=None)
@click.pass_context
def get_command(
    ctx: click.Context,
    resource: str,
    names_: tuple[str, ...],
    namespace: str,
    all_namespaces: bool,
    selector: str,
    show_labels: bool,
    output: str | None,
) -> None:
    """List pods, namespaces, services, deployments or events, as kubectl prints them."""
    request = GetRequest(
        kind=_kind(resource),
        names=names_,
        namespace=namespace,
        all_namespaces=all_namespaces,
        selector=selector,
        show_labels=show_labels,
        output=output,
    )
    runtime = _runtime(ctx)
    try:
        result = get(runtime.read(), request, now=time.time())
    except StateError as exc:
        _fail(f"error: {exc}")
    if runtime.store.exists() and not daemon_running(runtime.paths):
        click.echo(
            "warning: the local runtime daemon is not running, so this may be stale; "
            "any apply, label, rollout or delete starts it again",
            err=True,
        )
    click.echo(result.out, nl=False)
    click.echo(result.err, nl=False, err=True)
    if result.code:
        raise SystemExit(result.code)


def _default_container(pod: PodRecord, container: str | None) -> str:
    if container:
        return container
    chosen = pod.annotations.get("kubectl.kubernetes.io/default-container")
    all_names = [str(c.get("name")) for c in pod.spec.get("containers") or []]
    inits = [f"{c.get('name')} (init)" for c in pod.spec.get("initContainers") or []]
    chosen = chosen or (all_names[0] if all_names else "")
    if len(all_names) + len(inits) > 1:
        click.echo(
            f'Defaulted container "{chosen}" out of: {", ".join(all_names + inits)}', err=True
        )
    return chosen


@local.command("logs")
@click.argument("pod_name", metavar="POD")
@click.option("-c", "--container", default=None, help="Container name.")
@_namespace
@click.option("-p", "--previous", is_flag=True, help="The previous instance's output.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output.")
@click.pass_context
def logs_command(
    ctx: click.Context,
    pod_name: str,
    container: str | None,
    namespace: str,
    previous: bool,
    follow: bool,
) -> None:
    """Print a container's output."""
    runtime = _runtime(ctx)
    try:
        pod = runtime.find_pod(namespace, pod_name)
        path = runtime.log_file(pod, _default_container(pod, container), previous=previous)
    except apiserver.ApiError as exc:
        _fail(str(exc))
    with path.open("rb") as stream:
        while True:
            chunk = stream.read(65536)
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
                continue
            if not follow or not path.exists():
                return
            time.sleep(0.2)


@local.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("pod_name", metavar="POD")
@click.option("-c", "--container", default=None, help="Container name.")
@_namespace
@click.option("-i", "--stdin", is_flag=True, help="Accepted for kubectl compatibility.")
@click.option("-t", "--tty", is_flag=True, help="Accepted for kubectl compatibility.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def exec_command(
    ctx: click.Context,
    pod_name: str,
    container: str | None,
    namespace: str,
    stdin: bool,
    tty: bool,
    command: tuple[str, ...],
) -> None:
    """Run a command in a container: `exec POD -n NS -- CMD ARGS...`."""
    runtime = _runtime(ctx)
    try:
        pod = runtime.find_pod(namespace, pod_name)
        raise SystemExit(
            runtime.exec_in_pod(pod, _default_container(pod, container), list(command))
        )
    except apiserver.ApiError as exc:
        _fail(str(exc))


@local.group("control-plane")
def control_plane() -> None:
    """Run sidemesh control planes (revisions) as pods in istio-system."""


@control_plane.command("start")
@click.option("--revision", default="default", show_default=True, help="Revision name.")
@click.option(
    "--default",
    "is_default",
    is_flag=True,
    default=None,
    help="Also serve istio-injection=enabled (implied for revision `default`).",
)
@click.option("--replicas", type=click.IntRange(1, 10), default=1, show_default=True)
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until ready.")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds.")
@click.pass_context
def control_plane_start(
    ctx: click.Context,
    revision: str,
    is_default: bool | None,
    replicas: int,
    wait: bool,
    timeout: float,
) -> None:
    """Start (or update) the control plane of a revision."""
    runtime = _runtime(ctx, need_state=True)
    options = ControlPlaneOptions(
        revision=revision,
        replicas=replicas,
        default=revision == "default" if is_default is None else is_default,
    )
    try:
        for line in runtime.start_control_plane(options):
            click.echo(line)
    except apiserver.ApiError as exc:
        _fail(str(exc))
    _start(runtime)
    if not wait:
        return
    if not runtime.wait_control_plane_ready(options, timeout):
        _fail(
            f"error: control plane {revision!r} not ready after {timeout:.0f}s; see "
            f"`sidemesh local get pods -n istio-system` and `sidemesh local logs`"
        )
    click.echo(f'control plane "{revision}" is ready')


@control_plane.command("stop")
@click.option("--revision", default="default", show_default=True, help="Revision name.")
@click.pass_context
def control_plane_stop(ctx: click.Context, revision: str) -> None:
    """Stop a revision's control plane and remove its webhook."""
    runtime = _runtime(ctx, need_state=True)
    try:
        for line in runtime.stop_control_plane(revision):
            click.echo(line)
    except apiserver.ApiError as exc:
        _fail(str(exc))
    _start(runtime)


@local.command("down")
@click.pass_context
def down_command(ctx: click.Context) -> None:
    """Remove every namespace, interface, rule, file and process the runtime created."""
    runtime = _runtime(ctx)
    report = runtime.down()
    click.echo("\n".join(report) if report else "nothing to remove")


@local.command("node")
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    required=True,
    help="The API server to join (a user that may register nodes, bind and run pods).",
)
@click.option("--node-name", default="sidemesh-node", show_default=True, help="The Node's name.")
@click.option(
    "--host-service",
    "host_services",
    multiple=True,
    metavar="NS/NAME:PORT=HOST:PORT",
    help="A Service port served by a process on this host (e.g. a control plane run there).",
)
@click.option(
    "--expose",
    "exposed",
    multiple=True,
    metavar="HOST:PORT=NS/NAME:PORT",
    help="A host address reaching a Service inside (e.g. the webhook of an istiod pod).",
)
@click.option(
    "--service-cidr",
    default="10.96.0.0/16",
    show_default=True,
    help="The API server's --service-cluster-ip-range.",
)
@click.pass_context
def node_command(
    ctx: click.Context,
    kubeconfig: Path,
    node_name: str,
    host_services: tuple[str, ...],
    exposed: tuple[str, ...],
    service_cidr: str,
) -> None:
    """Make this host a Node of a real API server and run the pods bound to it (foreground;
    SIGTERM/Ctrl-C stops its pods and removes its network)."""
    import logging

    from sidemesh.local.node import NodeSettings, run_node
    from sidemesh.local.node_objects import Exposed, HostService, NodeConfigError

    runtime: Runtime = ctx.obj
    try:
        settings = NodeSettings(
            kubeconfig=kubeconfig.absolute(),
            node_name=node_name,
            state_dir=runtime.paths.root / "node",
            host_services=tuple(HostService.parse(s) for s in host_services),
            exposed=tuple(Exposed.parse(e) for e in exposed),
            service_cidr=service_cidr,
        )
        runtime.check()
    except (RuntimeUnavailable, NodeConfigError) as exc:
        _fail(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one line per request otherwise
    run_node(settings)


# The host reaches the local control planes from the node's network namespace (see there).
local.add_command(local_proxy_status)
local.add_command(local_prometheus)

__all__ = ["AdmissionError", "local"]
