"""`kubectl get` output: the same columns, the same status words, the same alignment.

The pod row follows kubectl's `printPod` (READY counts native sidecars, STATUS shows
`Init:N/M`, the waiting/terminated reason of a container, `Terminating`; RESTARTS gets
`(5m ago)`), AGE follows apimachinery's `HumanDuration`, and alignment is Go's tabwriter as
kubectl configures it (minimum width 6, padding 3, last column unpadded).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sidemesh.local.labels import format_labels
from sidemesh.local.model import (
    ContainerStatus,
    DeploymentRecord,
    Event,
    NamespaceRecord,
    PodRecord,
    ServiceRecord,
)

TAB_MIN_WIDTH = 6
TAB_PADDING = 3


def render_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Go's tabwriter with kubectl's settings; every line ends with a newline."""
    lines = [list(header), *(list(r) for r in rows)]
    widths = [0] * (len(header) - 1)
    for line in lines:
        for index, cell in enumerate(line[:-1]):
            widths[index] = max(widths[index], len(cell) + TAB_PADDING, TAB_MIN_WIDTH)
    out = []
    for line in lines:
        padded = [cell.ljust(widths[i]) for i, cell in enumerate(line[:-1])]
        out.append("".join(padded) + line[-1] + "\n")
    return "".join(out)


def human_duration(seconds: float) -> str:
    """apimachinery's `duration.HumanDuration` (kubectl's AGE)."""
    whole = int(seconds)
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 120:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 10:
        rest = whole % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = whole // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        years, days = hours // 24 // 365, (hours // 24) % 365
        return f"{years}y" if days == 0 else f"{years}y{days}d"
    return f"{hours // 24 // 365}y"


# --- pods -----------------------------------------------------------------------------------


def _restartable_init_names(pod: PodRecord) -> set[str]:
    return {
        str(c.get("name"))
        for c in pod.spec.get("initContainers") or []
        if isinstance(c, dict) and c.get("restartPolicy") == "Always"
    }


def _terminated_reason(status: ContainerStatus, prefix: str) -> str:
    if status.reason:
        return prefix + status.reason
    if status.signal:
        return f"{prefix}Signal:{status.signal}"
    return f"{prefix}ExitCode:{status.exit_code or 0}"


def pod_columns(pod: PodRecord, now: float) -> tuple[str, str, str, str, str]:
    """NAME, READY, STATUS, RESTARTS, AGE of one pod, as kubectl's printPod computes them."""
    sidecars = _restartable_init_names(pod)
    total = len(pod.spec.get("containers") or []) + len(sidecars)
    ready = 0
    restarts = 0
    sidecar_restarts = 0
    last_restart = 0.0
    last_sidecar_restart = 0.0
    reason = pod.reason or pod.phase
    initializing = False
    init_count = len(pod.spec.get("initContainers") or [])
    for index, status in enumerate(pod.init_statuses):
        restarts += status.restart_count
        if status.last_finished_at is not None:
            last_restart = max(last_restart, status.last_finished_at)
        restartable = status.name in sidecars
        if restartable:
            sidecar_restarts += status.restart_count
            if status.last_finished_at is not None:
                last_sidecar_restart = max(last_sidecar_restart, status.last_finished_at)
        if status.state == "terminated" and status.exit_code == 0:
            continue
        if restartable and status.started:
            ready += status.ready
            continue
        if status.state == "terminated":
            reason = _terminated_reason(status, "Init:")
        elif status.state == "waiting" and status.reason and status.reason != "PodInitializing":
            reason = "Init:" + status.reason
        else:
            reason = f"Init:{index}/{init_count}"
        initializing = True
        break
    if not initializing or pod.initialized:
        restarts, last_restart = sidecar_restarts, last_sidecar_restart
        has_running = False
        for status in reversed(pod.statuses):
            restarts += status.restart_count
            if status.last_finished_at is not None:
                last_restart = max(last_restart, status.last_finished_at)
            if status.state == "waiting" and status.reason:
                reason = status.reason
            elif status.state == "terminated":
                reason = _terminated_reason(status, "")
            elif status.ready and status.state == "running":
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running" if pod.ready else "NotReady"
    if pod.terminating and pod.phase not in ("Succeeded", "Failed"):
        reason = "Terminating"
    restarts_text = str(restarts)
    if restarts and last_restart:
        restarts_text = f"{restarts} ({human_duration(now - last_restart)} ago)"
    return pod.name, f"{ready}/{total}", reason, restarts_text, human_duration(now - pod.created)


def pods_table(
    pods: Iterable[PodRecord],
    *,
    now: float,
    all_namespaces: bool = False,
    show_labels: bool = False,
    wide: bool = False,
) -> str:
    header = ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    if wide:
        header += ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]
    if show_labels:
        header.append("LABELS")
    if all_namespaces:
        header.insert(0, "NAMESPACE")
    rows = []
    for pod in pods:
        row = list(pod_columns(pod, now))
        if wide:
            node = str(pod.spec.get("nodeName") or "<none>")
            row += [pod.pod_ip or "<none>", node, "<none>", "<none>"]
        if show_labels:
            row.append(format_labels(pod.labels))
        if all_namespaces:
            row.insert(0, pod.namespace)
        rows.append(row)
    return render_table(header, rows)


# --- other kinds ----------------------------------------------------------------------------


def namespaces_table(
    namespaces: Iterable[NamespaceRecord], *, now: float, show_labels: bool = False
) -> str:
    header = ["NAME", "STATUS", "AGE"] + (["LABELS"] if show_labels else [])
    rows = []
    for namespace in namespaces:
        row = [namespace.name, "Active", human_duration(now - namespace.created)]
        if show_labels:
            row.append(format_labels(namespace.labels))
        rows.append(row)
    return render_table(header, rows)


def _service_ports(service: ServiceRecord) -> str:
    ports = []
    for port in (service.manifest.get("spec") or {}).get("ports") or []:
        text = str(port.get("port"))
        if port.get("nodePort"):
            text += f":{port['nodePort']}"
        ports.append(f"{text}/{port.get('protocol') or 'TCP'}")
    return ",".join(ports) or "<none>"


def services_table(services: Iterable[ServiceRecord], *, now: float) -> str:
    header = ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    rows = [
        [
            service.name,
            str((service.manifest.get("spec") or {}).get("type") or "ClusterIP"),
            service.cluster_ip or "None",
            "<none>",
            _service_ports(service),
            human_duration(now - service.created),
        ]
        for service in services
    ]
    return render_table(header, rows)


def deployments_table(
    deployments: Iterable[tuple[DeploymentRecord, int, int, int]], *, now: float
) -> str:
    """Each deployment with its (ready, up-to-date, available) pod counts."""
    header = ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    rows = []
    for deployment, ready, up_to_date, available in deployments:
        replicas = (deployment.manifest.get("spec") or {}).get("replicas", 1)
        rows.append(
            [
                deployment.name,
                f"{ready}/{replicas}",
                str(up_to_date),
                str(available),
                human_duration(now - deployment.created),
            ]
        )
    return render_table(header, rows)


def events_table(events: Iterable[Event], *, now: float) -> str:
    header = ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    rows = [[human_duration(now - e.last), e.type, e.reason, e.object, e.message] for e in events]
    return render_table(header, rows)
