"""The demo's pure core: the commands it shows and the outcomes it checks, over the runtime's
state (no processes, no sockets, no clocks)."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sidemesh.api import names
from sidemesh.local.model import PodRecord, State
from sidemesh.local.table import pod_columns

FIRST_REVISION = "asm-173-3"
SECOND_REVISION = "asm-174-1"
NAMESPACE = "demo"
OUTSIDE_NAMESPACE = "outside"
OUTSIDE_POD = "plaintext-client"
SIDECAR_UID = names.PROXY_UID

# The steps, in order (`proven` and `demo_report` read their facts by number).
STEP_CONTROL_PLANE, STEP_APP, STEP_INJECT, STEP_MTLS, STEP_UPGRADE = 1, 2, 3, 4, 5
STEP_AUTHZ, STEP_SIGNALS, STEP_CLEANUP = 6, 7, 8

# What `kubectl exec ... -- python3 -c FETCH URL` runs in a container: the body, or a
# traceback ending in the error (exit 1).
FETCH = "import sys, urllib.request as u; print(u.urlopen(sys.argv[1], timeout=5).read().decode())"


@dataclass(frozen=True)
class Command:
    """One command as the guide writes it (kubectl) and as the demo runs it here."""

    local_args: tuple[str, ...]
    kubectl_args: tuple[str, ...] | None = None
    tool: str = "kubectl"  # the guide's program for `kubectl_args` (istioctl for proxy-status)

    @property
    def kubectl(self) -> str | None:
        return None if self.kubectl_args is None else shlex.join([self.tool, *self.kubectl_args])

    @property
    def local(self) -> str:
        return shlex.join(["sidemesh", "local", *self.local_args])


def same_command(*args: str) -> Command:
    """A command whose kubectl form is the same words (most of `sidemesh local`)."""
    return Command(local_args=args, kubectl_args=args)


def proxy_status_command(revision: str) -> Command:
    """The guide's `istioctl proxy-status`; here the local runtime's (from the host)."""
    args = ("proxy-status", "--revision", revision)
    return Command(local_args=args, kubectl_args=args, tool="istioctl")


def fetch_command(namespace: str, pod: str, url: str, container: str = "client") -> Command:
    """A request from a pod's container; kubectl's form with curl, the same request here
    with the host's python3 (the local runtime runs commands from the host)."""
    exec_args = ("exec", "-n", namespace, pod, "-c", container, "--")
    return Command(
        local_args=(*exec_args, "python3", "-c", FETCH, url),
        kubectl_args=(*exec_args, "curl", "-s", url),
    )


def outside_objects() -> list[dict[str, Any]]:
    """A namespace without injection and a pod in it: a client from outside the mesh."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OUTSIDE_NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": OUTSIDE_POD, "namespace": OUTSIDE_NAMESPACE},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {
                        "name": "client",
                        "image": "python:3.12-slim",
                        "command": ["python3", "-c", "import time; time.sleep(10**9)"],
                    }
                ],
            },
        },
    ]


def strict_policy(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": namespace},
        "spec": {"mtls": {"mode": "STRICT"}},
    }


# --- outcomes over the state ----------------------------------------------------------------


def live_pods(state: State, namespace: str) -> list[PodRecord]:
    pods = (p for p in state.pods.values() if p.namespace == namespace and not p.terminating)
    return sorted(pods, key=lambda p: p.name)


def ready_column(pod: PodRecord) -> str:
    """kubectl's READY column, e.g. "2/2"."""
    return pod_columns(pod, 0.0)[1]


def fully_ready(pod: PodRecord) -> bool:
    ready, _, total = ready_column(pod).partition("/")
    return pod.ready and ready == total


def has_sidecar(pod: PodRecord) -> bool:
    containers = [*(pod.spec.get("containers") or []), *(pod.spec.get("initContainers") or [])]
    return any(c.get("name") == names.CONTAINER_PROXY for c in containers if isinstance(c, dict))


def sidecar_revision(pod: PodRecord) -> str | None:
    """The revision in the pod's `sidecar.istio.io/status` annotation (None: not injected)."""
    raw = pod.annotations.get(names.ANNOTATION_STATUS)
    if not raw:
        return None
    try:
        status = json.loads(raw)
    except ValueError:
        return None
    revision = status.get("revision") if isinstance(status, dict) else None
    return str(revision) if revision else None


def expected_pods(state: State, namespace: str) -> int:
    """What the namespace's Deployments ask for."""
    total = 0
    for deployment in state.deployments.values():
        if deployment.namespace == namespace:
            replicas = (deployment.manifest.get("spec") or {}).get("replicas")
            total += 1 if replicas is None else int(replicas)
    return total


def rollout_done(state: State, namespace: str, *, revision: str | None) -> bool:
    """Every pod the Deployments want is up, fully ready, and runs `revision`'s sidecar (None:
    no sidecar at all); no old pod is left."""
    namespace_pods = [p for p in state.pods.values() if p.namespace == namespace]
    pods = live_pods(state, namespace)
    if len(namespace_pods) != expected_pods(state, namespace) or len(pods) != len(namespace_pods):
        return False
    for pod in pods:
        if not fully_ready(pod) or sidecar_revision(pod) != revision:
            return False
        if revision is None and has_sidecar(pod):
            return False
    return True


def rollout_status(state: State, namespace: str, now: float) -> str:
    """What `rollout_done` sees, in a line: for a report when the wait for it gives up."""
    pods = sorted((p for p in state.pods.values() if p.namespace == namespace),
                  key=lambda p: p.name)  # fmt: skip
    shown = []
    for pod in pods:
        where = f"terminating for {now - pod.deletion_requested:.0f} s" if (
            pod.deletion_requested is not None) else pod.phase  # fmt: skip
        shown.append(f"{pod.name} {ready_column(pod)} {where} sidecar={sidecar_revision(pod)}")
    return f"{len(pods)} pods, {expected_pods(state, namespace)} wanted: " + "; ".join(shown)


def control_plane_pods(state: State, revision: str) -> list[PodRecord]:
    return [
        p
        for p in live_pods(state, names.CONTROL_PLANE_NAMESPACE)
        if p.labels.get("app") == "istiod" and p.labels.get(names.LABEL_REVISION) == revision
    ]


def pod_summary(pods: Iterable[PodRecord]) -> list[dict[str, Any]]:
    """What the checks saw, for reports and tests."""
    return [
        {
            "name": p.name,
            "ready": ready_column(p),
            "sidecar": has_sidecar(p),
            "revision": sidecar_revision(p),
            "labels": p.labels,
        }
        for p in pods
    ]


def caller_in(reply: str) -> str | None:
    """The caller's SPIFFE id in the demo backend's JSON answer (None: plaintext caller)."""
    for line in reversed(reply.strip().splitlines()):
        try:
            answer = json.loads(line)
        except ValueError:
            continue
        if isinstance(answer, dict):
            caller = answer.get("caller")
            return str(caller) if caller else None
    return None


def refusal_in(output: str) -> str | None:
    """The error a refused request ended with (the traceback's last line), if any."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    if not lines:
        return None
    last = lines[-1]
    refused = ("ConnectionResetError", "RemoteDisconnected", "ConnectionRefusedError", "URLError")
    return last if last.split(":")[0].split(".")[-1] in refused else None


def connected_proxies(rows: Sequence[Mapping[str, Any]]) -> int:
    """How many sidecars a control plane's `/debug/syncz` lists."""
    return len(rows)


def proven(facts: Mapping[int, Mapping[str, Any]], *, first: str, second: str) -> list[str]:
    """The demo's closing summary: one line per step that passed (`facts` by step number, as
    the steps recorded them), each saying what its checks established."""
    lines = []
    if STEP_CONTROL_PLANE in facts:
        lines.append(
            f"control plane {first} runs in {names.CONTROL_PLANE_NAMESPACE}, labelled "
            f"app=istiod, {names.LABEL_REVISION}={first}"
        )
    if STEP_APP in facts:
        lines.append(
            f"without a label, the {len(facts[STEP_APP]['pods'])} demo pods ran alone (1/1)"
        )
    if STEP_INJECT in facts:
        step = facts[STEP_INJECT]
        lines.append(
            f"{names.LABEL_REVISION}={first} and a restart gave all {len(step['pods'])} pods "
            f"the {first} sidecar (2/2) in {step['restart_to_ready_s']:.0f} s "
            f"(one sidecar: {step['sidecar_rss_bytes'] / 2**20:.0f} MiB)"
        )
    if STEP_MTLS in facts:
        step = facts[STEP_MTLS]
        lines.append(f"the backend saw its caller as {step['caller']}: mutual TLS")
        lines.append(
            f"STRICT refused plaintext from outside the mesh ({step['plaintext_refusal']}); "
            "mesh traffic still flowed"
        )
    if STEP_UPGRADE in facts:
        step = facts[STEP_UPGRADE]
        lines.append(
            f"upgrade: all {step['connected'][second]} sidecars moved to {second} in "
            f"{step['restart_to_ready_s']:.0f} s; {first} served none, was stopped, and "
            "traffic still flowed"
        )
    if STEP_AUTHZ in facts:
        step = facts[STEP_AUTHZ]
        lines.append(
            f"AuthorizationPolicy by identity: {step['denied_from']} refused "
            f"(HTTP {step['denied_status']}, {step['denied_body']}), {step['allowed_from']} "
            f"allowed (HTTP {step['allowed_status']})"
        )
    if STEP_SIGNALS in facts:
        step = facts[STEP_SIGNALS]
        lines.append(
            f"golden signals: the demo's {step['requests_sent']} requests {step['edge']} "
            f"counted exactly by both sidecars (reporter=source {step['requests_total_source']}"
            f", reporter=destination {step['requests_total_destination']}), all over mTLS"
        )
    if STEP_CLEANUP in facts:
        lines.append("cleaned up: no network namespace, process or state left behind")
    return lines
