"""`sidemesh proxy-status`: every connected sidecar and whether it has the latest config.

Reads each control plane's `/debug/syncz` (monitoring port 15014) and prints Istio's columns:
per xDS type SYNCED (ACKed the latest), STALE (sent, not yet ACKed), NACK (rejected; the
error is shown with --details) or NOT SENT.

Where the control planes are, first match wins:

* `--address HOST:PORT`: that monitoring server, directly;
* `--kubeconfig`/`--context`: a cluster, reached through its API server like istioctl does
  (every running istiod pod of `--revision` in `--istioNamespace`, via the pods/proxy
  subresource: nothing needs to be routable from here but the API server);
* a local mesh (`sidemesh local`) with a control plane: its istiod pods, from inside the
  runtime's node network namespace (root), as any pod of the mesh would reach them;
* a cluster from $KUBECONFIG, ~/.kube/config or the in-cluster service account;
* else 127.0.0.1:15014, a `sidemesh discovery` run on this host.

`/debug/syncz` answers loopback or an authenticated service account of the control plane's
namespace (`xds/monitoring.py`), so every way but loopback presents a token of that
namespace's `default` service account, as istioctl does: in a cluster, one minted for ten
minutes (TokenRequest, audience `istio-ca`; the user needs `create serviceaccounts/token`
there) and sent in `X-Sidemesh-Debug-Token`, because the API server's pods/proxy consumes
`Authorization`; in a local mesh, the runtime's own token for that identity (root reads it);
with `--address`, the one in `--token-file` if given.
"""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import click
import orjson

from sidemesh.api import names
from sidemesh.cli.install import cluster_options, run_against_cluster
from sidemesh.xds.monitoring import DEBUG_SERVICE_ACCOUNT, DEBUG_TOKEN_HEADER
from sidemesh.xds.proxy_status import render_details, render_table

SYNCZ_PATH: Final = "/debug/syncz"
LOCAL_ADDRESS: Final = f"127.0.0.1:{names.PORT_MONITORING}"
MONITORING_PORT_NAME: Final = "http-monitoring"  # the istiod container's port, Istio's name
TIMEOUT_SECONDS: Final = 5.0
TOKEN_SECONDS: Final = 600  # the shortest a TokenRequest may ask for

Rows = list[dict[str, Any]]


class StatusUnavailable(Exception):
    """No control plane could be read; the message says where we looked."""


@dataclass(frozen=True)
class ControlPlanePod:
    """An istiod pod, as found in a cluster or the local runtime."""

    name: str
    namespace: str
    ip: str
    port: int


# --- one monitoring server ------------------------------------------------------------------


def fetch_status(address: str, timeout: float = TIMEOUT_SECONDS, token: str | None = None) -> Rows:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://{address}{SYNCZ_PATH}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return _rows(response.read())
    except urllib.error.HTTPError as exc:  # the body says why (e.g. which token is needed)
        text = exc.read().decode(errors="replace").strip()[:300]
        raise StatusUnavailable(f"{SYNCZ_PATH} answered {exc.code}: {text}") from exc


def _rows(body: bytes) -> Rows:
    rows = orjson.loads(body)
    if not isinstance(rows, list):
        raise ValueError(f"{SYNCZ_PATH} answered {type(rows).__name__}, not a list")
    return rows


def monitoring_port(pod: Mapping[str, Any]) -> int:
    """The pod's container port named http-monitoring (the installed istiod declares it),
    else 15014."""
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == MONITORING_PORT_NAME and port.get("containerPort"):
                return int(port["containerPort"])
    return names.PORT_MONITORING


def running_control_planes(pods: Sequence[Mapping[str, Any]]) -> list[ControlPlanePod]:
    """The pods that can answer: Running, with an address, not being deleted; by name."""
    found = []
    for pod in pods:
        metadata, status = pod.get("metadata") or {}, pod.get("status") or {}
        if status.get("phase") != "Running" or not status.get("podIP"):
            continue
        if metadata.get("deletionTimestamp"):
            continue
        found.append(
            ControlPlanePod(
                name=str(metadata["name"]),
                namespace=str(metadata["namespace"]),
                ip=str(status["podIP"]),
                port=monitoring_port(pod),
            )
        )
    return sorted(found, key=lambda p: p.name)


def control_plane_selector(revision: str | None) -> dict[str, str]:
    selector = {"app": "istiod"}
    if revision:
        selector[names.LABEL_REVISION] = revision
    return selector


def _gather(
    planes: Sequence[ControlPlanePod],
    read: Callable[[ControlPlanePod], Rows],
    where: str,
    revision: str | None,
) -> Rows:
    """Every plane's rows; fails only if none answered (a half answer beats none, said on
    stderr)."""
    if not planes:
        which = f" of revision {revision}" if revision else ""
        raise StatusUnavailable(f"no running istiod pod{which} in {where}")
    rows: Rows = []
    failures = []
    for plane in planes:
        try:
            rows += read(plane)
        except (OSError, ValueError, StatusUnavailable) as exc:
            failures.append(f"{plane.namespace}/{plane.name}: {exc}")
    if failures and len(failures) == len(planes):
        raise StatusUnavailable("cannot read proxy status from " + "; ".join(failures))
    for failure in failures:
        click.echo(f"warning: cannot read proxy status from {failure}", err=True)
    return rows


# --- a cluster, through its API server --------------------------------------------------------


def proxy_path(plane: ControlPlanePod) -> str:
    """The API server's pods/proxy path to the plane's `/debug/syncz`."""
    return f"/api/v1/namespaces/{plane.namespace}/pods/{plane.name}:{plane.port}/proxy{SYNCZ_PATH}"


async def debug_token(client: Any, namespace: str) -> str | None:
    """A short-lived token of `namespace`'s default service account for the control plane's
    debug endpoints; None (said on stderr) when the user may not mint one."""
    from lightkube.models.authentication_v1 import TokenRequestSpec
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import ServiceAccountToken

    request = ServiceAccountToken(
        metadata=ObjectMeta(name=DEBUG_SERVICE_ACCOUNT, namespace=namespace),
        spec=TokenRequestSpec(audiences=[names.TOKEN_AUDIENCE], expirationSeconds=TOKEN_SECONDS),
    )
    try:
        issued = await client.create(request, name=DEBUG_SERVICE_ACCOUNT, namespace=namespace)
        token = issued.status.token if issued.status is not None else None
    except Exception as exc:  # asking without a token still shows what the server says
        click.echo(
            f"warning: cannot get a token of serviceaccount {namespace}/{DEBUG_SERVICE_ACCOUNT} "
            f"for the control plane's debug endpoints: {exc}",
            err=True,
        )
        return None
    return str(token) if token else None


async def fetch_from_cluster(
    client: Any, *, namespace: str, revision: str | None, token: str | None = None
) -> Rows:
    """Rows of every running istiod pod (of `revision`) in `namespace`, through the API
    server's pods/proxy subresource (`client` is a lightkube AsyncClient), presenting
    `token` in X-Sidemesh-Debug-Token."""
    from lightkube.resources.core_v1 import Pod

    from sidemesh.kube.client import as_dict

    listed = [
        as_dict(pod)
        async for pod in client.list(
            Pod, namespace=namespace, labels=control_plane_selector(revision)
        )
    ]
    planes = running_control_planes(listed)
    # lightkube has no call for a subresource's raw answer: use its configured connection.
    http = client._client._client
    headers = {DEBUG_TOKEN_HEADER: token} if token else {}
    answers: dict[str, Rows | Exception] = {}
    for plane in planes:
        try:
            response = await http.get(proxy_path(plane), headers=headers)
            if response.status_code != 200:
                text = response.text.strip()[:300]
                raise StatusUnavailable(f"the API server answered {response.status_code}: {text}")
            answers[plane.name] = _rows(response.content)
        except Exception as exc:  # reported per pod by _gather
            answers[plane.name] = exc

    def read(plane: ControlPlanePod) -> Rows:
        answer = answers[plane.name]
        if isinstance(answer, Exception):
            raise StatusUnavailable(str(answer) or type(answer).__name__)
        return answer

    return _gather(planes, read, f"namespace {namespace}", revision)


def cluster_configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether a kubeconfig (or an in-cluster service account) is there to be used."""
    if environ.get("KUBECONFIG") or environ.get("KUBERNETES_SERVICE_HOST"):
        return True
    return (Path.home() / ".kube" / "config").is_file()


# --- the local runtime ------------------------------------------------------------------------


def local_control_planes(
    state_dir: Path, revision: str | None
) -> tuple[str, list[ControlPlanePod]] | None:
    """(the runtime's node network namespace, its running istiod pods), None when there is no
    local mesh."""
    from sidemesh.local.store import Store

    store = Store(state_dir)
    if not store.exists():
        return None
    state = store.read()
    selector = control_plane_selector(revision)
    planes = [
        ControlPlanePod(pod.name, pod.namespace, pod.pod_ip, names.PORT_MONITORING)
        for pod in state.pods.values()
        if pod.namespace == names.CONTROL_PLANE_NAMESPACE
        and not pod.terminating
        and pod.pod_ip
        and all(pod.labels.get(k) == v for k, v in selector.items())
    ]
    return state.network.node_netns, sorted(planes, key=lambda p: p.name)


def local_debug_token(state_dir: Path) -> str:
    """The local mesh's token of the control plane namespace's default service account (the
    runtime issues it on first use; root only)."""
    from sidemesh.local.pki import LocalPki

    return LocalPki(state_dir).token(names.CONTROL_PLANE_NAMESPACE, DEBUG_SERVICE_ACCOUNT)


def fetch_in_netns(
    netns: str, plane: ControlPlanePod, timeout: float = TIMEOUT_SECONDS, token: str | None = None
) -> Rows:
    """`/debug/syncz` of a local istiod pod, asked from inside network namespace `netns`."""
    from sidemesh.local.netns import connect_in_netns

    with connect_in_netns(netns, plane.ip, plane.port, timeout) as sock:
        return _rows(http_get(sock, SYNCZ_PATH, token=token))


def http_get(sock: socket.socket, path: str, *, token: str | None = None) -> bytes:
    """The body of a 200 answer to `GET path` over `sock` (HTTP/1.0: the server closes)."""
    authorization = f"Authorization: Bearer {token}\r\n" if token else ""
    sock.sendall(f"GET {path} HTTP/1.0\r\nHost: istiod\r\n{authorization}\r\n".encode())
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode("latin-1")
    if status.split(" ")[1:2] != ["200"]:
        said = body.decode(errors="replace").strip()[:300]
        raise StatusUnavailable(f"{path} answered {status!r}" + (f": {said}" if said else ""))
    return body


# --- the command --------------------------------------------------------------------------------


@click.command("proxy-status")
@click.option(
    "--address", default=None, metavar="HOST:PORT",
    help="Read this control-plane monitoring address directly.",
)  # fmt: skip
@click.option(
    "--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="A file holding a bearer token to present to --address (not needed on loopback), "
    "e.g. from `kubectl create token default -n istio-system --audience istio-ca`.",
)  # fmt: skip
@cluster_options
@click.option("--revision", "-r", default=None, help="Only the control plane of this revision.")
@click.option(
    "--istioNamespace", "-i", "istio_namespace", default=names.CONTROL_PLANE_NAMESPACE,
    show_default=True, help="The control plane's namespace in a cluster.",
)  # fmt: skip
@click.option(
    "--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="The local runtime's state (default: $SIDEMESH_LOCAL_STATE, /run/sidemesh-local).",
)  # fmt: skip
@click.option("--details", is_flag=True, help="Also print the errors of NACKed responses.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw status as JSON.")
def proxy_status(
    *,
    address: str | None,
    token_file: Path | None,
    kubeconfig: Path | None,
    context: str | None,
    revision: str | None,
    istio_namespace: str,
    state_dir: Path | None,
    details: bool,
    as_json: bool,
) -> None:
    """Show every connected sidecar: revision, control plane, and per-type sync state."""
    if token_file is not None and address is None:
        raise click.UsageError("--token-file is for --address (elsewhere a token is minted)")
    try:
        token = token_file.read_text(encoding="utf-8").strip() if token_file else None
    except OSError as exc:
        raise click.ClickException(f"cannot read --token-file: {exc}") from exc
    try:
        rows = _read_rows(
            address=address,
            token=token,
            kubeconfig=kubeconfig,
            context=context,
            revision=revision,
            istio_namespace=istio_namespace,
            state_dir=state_dir,
        )
    except StatusUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    _show(rows, details=details, as_json=as_json)


@click.command("proxy-status")
@click.option("--revision", "-r", default=None, help="Only the control plane of this revision.")
@click.option("--details", is_flag=True, help="Also print the errors of NACKed responses.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw status as JSON.")
@click.pass_context
def local_proxy_status(
    ctx: click.Context, *, revision: str | None, details: bool, as_json: bool
) -> None:
    """Show the sidecars connected to this runtime's control planes (istioctl proxy-status)."""
    try:
        rows = _read_local(ctx.obj.paths.root, revision)
    except StatusUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    _show(rows, details=details, as_json=as_json)


def _show(rows: Rows, *, details: bool, as_json: bool) -> None:
    if as_json:
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(render_table(rows))
    if details:
        text = render_details(rows)
        if text:
            click.echo(text)


def _read_rows(
    *,
    address: str | None,
    token: str | None,
    kubeconfig: Path | None,
    context: str | None,
    revision: str | None,
    istio_namespace: str,
    state_dir: Path | None,
) -> Rows:
    if address is not None:
        return _read_address(address, revision, token)
    if kubeconfig is None and context is None:
        from sidemesh.local.paths import state_dir_from

        # A local mesh with a control plane wins; one without wins only if nothing else is
        # configured (then the answer is that it has no control plane).
        local = local_control_planes(state_dir_from(state_dir), revision)
        if local is not None and (local[1] or state_dir is not None or not cluster_configured()):
            return _read_local_planes(state_dir_from(state_dir), *local, revision)
        if state_dir is not None:
            return _read_local(state_dir_from(state_dir), revision)  # says there is none
        if not cluster_configured():
            return _read_address(LOCAL_ADDRESS, revision)

    async def work(client: Any) -> Rows:
        token = await debug_token(client, istio_namespace)
        return await fetch_from_cluster(
            client, namespace=istio_namespace, revision=revision, token=token
        )

    rows: Rows = run_against_cluster(kubeconfig, context, work)
    return rows


def _read_local(state_dir: Path, revision: str | None) -> Rows:
    local = local_control_planes(state_dir, revision)
    if local is None:
        raise StatusUnavailable(f"no local mesh at {state_dir} (nothing applied yet)")
    return _read_local_planes(state_dir, *local, revision)


def _read_local_planes(
    state_dir: Path, netns: str, planes: list[ControlPlanePod], revision: str | None
) -> Rows:
    if planes and os.geteuid() != 0:
        raise StatusUnavailable(
            "the local mesh's control plane is reached from its network namespace: run as root"
        )
    token = local_debug_token(state_dir) if planes else None
    return _gather(
        planes,
        lambda plane: fetch_in_netns(netns, plane, token=token),
        "the local mesh",
        revision,
    )


def _read_address(address: str, revision: str | None, token: str | None = None) -> Rows:
    try:
        rows = fetch_status(address, token=token)
    except (urllib.error.URLError, OSError, ValueError, StatusUnavailable) as exc:
        raise StatusUnavailable(f"cannot read proxy status from {address}: {exc}") from exc
    if revision:
        rows = [row for row in rows if row.get("revision") == revision]
    return rows
