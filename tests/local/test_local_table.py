"""`get pods` / `get namespaces` output: kubectl's columns, status words and alignment."""

from __future__ import annotations

from typing import Any

import pytest

from sidemesh.local.model import ContainerStatus, NamespaceRecord, PodRecord
from sidemesh.local.table import human_duration, namespaces_table, pod_columns, pods_table

NOW = 1_800_000_000.0
HOUR = 3600.0

GUIDE_ISTIOD = """\
NAME                                READY   STATUS    RESTARTS   AGE   LABELS
istiod-asm-173-3-5788d57586-bljj4   1/1     Running   0          23h   app=istiod,istio.io/rev=asm-173-3,istio=istiod,pod-template-hash=5788d57586
istiod-asm-173-3-5788d57586-vsklm   1/1     Running   1          23h   app=istiod,istio.io/rev=asm-173-3,istio=istiod,pod-template-hash=5788d57586
"""  # noqa: E501


def _pod(
    name: str,
    *,
    containers: list[dict[str, Any]],
    init: list[dict[str, Any]] | None = None,
    statuses: list[ContainerStatus],
    init_statuses: list[ContainerStatus] | None = None,
    labels: dict[str, str] | None = None,
    age: float = 20.0,
    **fields: Any,
) -> PodRecord:
    spec: dict[str, object] = {"containers": containers}
    if init:
        spec["initContainers"] = init
    return PodRecord(
        namespace="demo",
        name=name,
        uid="u-" + name,
        created=NOW - age,
        manifest={"metadata": {"name": name, "labels": labels or {}}, "spec": spec},
        statuses=statuses,
        init_statuses=init_statuses or [],
        **fields,
    )


def _running(name: str, *, ready: bool = True, restarts: int = 0, **kw: Any) -> ContainerStatus:
    return ContainerStatus(
        name=name, state="running", ready=ready, started=True, restart_count=restarts, **kw
    )


def test_the_guides_istiod_listing_byte_for_byte() -> None:
    labels = {
        "app": "istiod",
        "istio.io/rev": "asm-173-3",
        "istio": "istiod",
        "pod-template-hash": "5788d57586",
    }
    pods = [
        _pod(
            "istiod-asm-173-3-5788d57586-bljj4",
            containers=[{"name": "discovery"}],
            statuses=[_running("discovery")],
            labels=labels,
            age=23 * HOUR + 100,
            phase="Running",
            initialized=True,
            ready=True,
        ),
        _pod(
            "istiod-asm-173-3-5788d57586-vsklm",
            containers=[{"name": "discovery"}],
            statuses=[_running("discovery", restarts=1)],
            labels=labels,
            age=23 * HOUR + 5,
            phase="Running",
            initialized=True,
            ready=True,
        ),
    ]
    assert pods_table(pods, now=NOW, show_labels=True) == GUIDE_ISTIOD


def test_injected_workload_reads_two_of_two() -> None:
    pod = _pod(
        "web-5c7cb75d85-g4htv",
        containers=[{"name": "web"}, {"name": "istio-proxy"}],
        init=[{"name": "istio-init"}],
        init_statuses=[
            ContainerStatus(name="istio-init", state="terminated", exit_code=0, reason="Completed")
        ],
        statuses=[_running("web"), _running("istio-proxy")],
        phase="Running",
        initialized=True,
        ready=True,
    )
    assert pods_table([pod], now=NOW) == (
        "NAME                   READY   STATUS    RESTARTS   AGE\n"
        "web-5c7cb75d85-g4htv   2/2     Running   0          20s\n"
    )


def test_native_sidecar_counts_in_ready() -> None:
    pod = _pod(
        "p",
        containers=[{"name": "web"}],
        init=[{"name": "istio-init"}, {"name": "istio-proxy", "restartPolicy": "Always"}],
        init_statuses=[
            ContainerStatus(name="istio-init", state="terminated", exit_code=0, reason="Completed"),
            _running("istio-proxy", ready=False),
        ],
        statuses=[_running("web")],
        phase="Running",
        initialized=True,
    )
    assert pod_columns(pod, NOW)[1:3] == ("1/2", "Running")


@pytest.mark.parametrize(
    ("init_statuses", "statuses", "fields", "expected"),
    [
        (
            [
                ContainerStatus(name="i1", reason="PodInitializing"),
                ContainerStatus(name="i2", reason="PodInitializing"),
            ],
            [ContainerStatus(name="c", reason="PodInitializing")],
            {},
            "Init:0/2",
        ),
        (
            [
                ContainerStatus(name="i1", state="terminated", exit_code=0, reason="Completed"),
                ContainerStatus(name="i2", state="running"),
            ],
            [ContainerStatus(name="c", reason="PodInitializing")],
            {},
            "Init:1/2",
        ),
        (
            [ContainerStatus(name="i1", reason="CrashLoopBackOff", restart_count=3)],
            [ContainerStatus(name="c", reason="PodInitializing")],
            {},
            "Init:CrashLoopBackOff",
        ),
        (
            [ContainerStatus(name="i1", state="terminated", exit_code=2, reason="Error")],
            [ContainerStatus(name="c", reason="PodInitializing")],
            {},
            "Init:Error",
        ),
        ([], [ContainerStatus(name="c", reason="ContainerCreating")], {}, "ContainerCreating"),
        (
            [],
            [ContainerStatus(name="c", reason="CrashLoopBackOff", restart_count=2)],
            {"initialized": True},
            "CrashLoopBackOff",
        ),
        (
            [],
            [ContainerStatus(name="c", state="terminated", exit_code=0, reason="Completed")],
            {"initialized": True, "phase": "Succeeded"},
            "Completed",
        ),
        (
            [],
            [_running("c")],
            {"initialized": True, "phase": "Running", "deletion_requested": NOW - 1},
            "Terminating",
        ),
    ],
)
def test_status_column(
    init_statuses: list[ContainerStatus],
    statuses: list[ContainerStatus],
    fields: dict[str, Any],
    expected: str,
) -> None:
    init = [{"name": s.name} for s in init_statuses]
    pod = _pod(
        "p",
        containers=[{"name": s.name} for s in statuses],
        init=init,
        init_statuses=init_statuses,
        statuses=statuses,
        **fields,
    )
    assert pod_columns(pod, NOW)[2] == expected


def test_restarts_show_when_the_last_one_was() -> None:
    status = _running("c", restarts=3, last_finished_at=NOW - 300)
    pod = _pod("p", containers=[{"name": "c"}], statuses=[status], initialized=True)
    assert pod_columns(pod, NOW)[3] == "3 (5m ago)"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (20, "20s"),
        (119, "119s"),
        (120, "2m"),
        (150, "2m30s"),
        (600, "10m"),
        (10799, "179m"),
        (10800, "3h"),
        (3 * 3600 + 60, "3h1m"),
        (23 * 3600 + 100, "23h"),
        (47 * 3600, "47h"),
        (48 * 3600, "2d"),
        (50 * 3600, "2d2h"),
        (8 * 86400, "8d"),
        (800 * 86400, "2y70d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_age_is_apimachinery_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_all_namespaces_and_wide_columns() -> None:
    pod = _pod(
        "web-1",
        containers=[{"name": "web"}],
        statuses=[_running("web")],
        pod_ip="10.244.0.7",
        phase="Running",
        initialized=True,
        ready=True,
    )
    pod.manifest["spec"]["nodeName"] = "sidemesh-local"
    text = pods_table([pod], now=NOW, all_namespaces=True, wide=True)
    assert text.splitlines() == [
        "NAMESPACE   NAME    READY   STATUS    RESTARTS   AGE   IP           NODE             "
        "NOMINATED NODE   READINESS GATES",
        "demo        web-1   1/1     Running   0          20s   10.244.0.7   sidemesh-local   "
        "<none>           <none>",
    ]


def test_namespaces_with_labels() -> None:
    spaces = [
        NamespaceRecord(
            name="demo",
            uid="u",
            created=NOW - 7200,
            labels={"kubernetes.io/metadata.name": "demo", "istio.io/rev": "asm-173-3"},
        )
    ]
    assert namespaces_table(spaces, now=NOW, show_labels=True) == (
        "NAME   STATUS   AGE    LABELS\n"
        "demo   Active   120m   istio.io/rev=asm-173-3,kubernetes.io/metadata.name=demo\n"
    )
