"""`upgrade-sidecars` for the local runtime: the same planner, over the runtime's state.

A local revision's injector is built from the files its discovery pod was started with
(`--values`, `--injector-config`, `--mesh-config` in the istiod Deployment's args), so the
planner re-injects with exactly what that revision's webhook uses. Patches go through
`apiserver.patch_pod`, which refuses what a running pod may not change, and the pod's worker
follows: only the containers whose image changed restart.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path, PurePosixPath
from typing import Any

from sidemesh.api import names
from sidemesh.api.config import ConfigError
from sidemesh.inject.engine import Injector
from sidemesh.inject.template import TemplateError
from sidemesh.local import apiserver
from sidemesh.local.admission import webhook_entries
from sidemesh.local.model import State, key
from sidemesh.local.objects import pod_object
from sidemesh.local.store import Store
from sidemesh.rollout.plan import PodPlan, is_upgraded
from sidemesh.rollout.selection import RolloutView, plan_namespace
from sidemesh.rollout.upgrade import UpgradeResult

_FILE_FLAGS = {"--values": "values", "--injector-config": "injector_config",
               "--mesh-config": "mesh_config"}  # fmt: skip


def _discovery_files(state: State, revision: str) -> dict[str, Path] | str:
    name = names.service_name(revision)
    deployment = state.deployments.get(key(names.CONTROL_PLANE_NAMESPACE, name))
    if deployment is None:
        return f"no local control plane deployment {names.CONTROL_PLANE_NAMESPACE}/{name}"
    template = (deployment.manifest.get("spec") or {}).get("template") or {}
    pod_spec = template.get("spec") or {}
    files: dict[str, Path] = {}
    for container in pod_spec.get("containers") or []:
        args = [str(a) for a in container.get("args") or []]
        for flag, keyword in _FILE_FLAGS.items():
            for index, arg in enumerate(args):
                if arg == flag and index + 1 < len(args):
                    files[keyword] = _host_path(pod_spec, container, args[index + 1])
                elif arg.startswith(f"{flag}="):
                    files[keyword] = _host_path(pod_spec, container, arg.split("=", 1)[1])
    return files


def _host_path(pod_spec: dict[str, Any], container: dict[str, Any], path: str) -> Path:
    """Where a file the container names lives on the host: under a hostPath volume's mount
    (the control plane's mesh config is mounted so), else the path itself (the runtime's
    containers see the host's files)."""
    sources = {
        str(v.get("name")): str(v["hostPath"]["path"])
        for v in pod_spec.get("volumes") or []
        if isinstance(v.get("hostPath"), dict) and v["hostPath"].get("path")
    }
    mounts = sorted(
        (m for m in container.get("volumeMounts") or [] if m.get("name") in sources),
        key=lambda m: len(str(m.get("mountPath", ""))),
        reverse=True,  # the deepest mount wins
    )
    for mount in mounts:
        mount_path = PurePosixPath(str(mount.get("mountPath", "")))
        candidate = PurePosixPath(path)
        if candidate == mount_path or mount_path in candidate.parents:
            return Path(sources[str(mount["name"])]) / candidate.relative_to(mount_path)
    return Path(path)


def local_view(state: State) -> RolloutView:
    built: dict[str, Injector | str] = {}

    def injector_for(revision: str) -> Injector | str:
        if revision in built:
            return built[revision]
        files = _discovery_files(state, revision)
        if isinstance(files, str):
            built[revision] = files
            return files
        try:
            built[revision] = Injector.from_files(
                revision=revision, values=files.get("values"),
                injector_config=files.get("injector_config"), mesh_config=files.get("mesh_config"),
            )  # fmt: skip
        except (ConfigError, TemplateError, OSError) as exc:
            built[revision] = f"revision {revision}: {exc}"
        return built[revision]

    pods: list[dict[str, Any]] = []
    for record in state.pods.values():
        pod = pod_object(record, host_ip=state.network.bridge_ip)
        pod["metadata"].update(name=record.name, namespace=record.namespace, uid=record.uid)
        pods.append(pod)
    return RolloutView(
        namespace_labels={n: dict(r.labels) for n, r in state.namespaces.items()},
        pods=tuple(pods),
        entries=tuple(webhook_entries(state.control_planes.values())),
        injector_for=injector_for,
    )


def plan_local(store: Store, namespace: str, *, revision: str | None = None) -> list[PodPlan]:
    return plan_namespace(local_view(store.read()), namespace, revision=revision)


def patch_local(store: Store, plan: PodPlan) -> UpgradeResult:
    assert plan.patch is not None
    try:
        with store.transaction() as state:
            apiserver.patch_pod(state, plan.namespace, plan.name, plan.patch)
    except apiserver.ApiError as exc:
        return UpgradeResult(plan, "failed", str(exc))
    return UpgradeResult(plan, "patched")


async def wait_local(
    store: Store, plan: PodPlan, *, timeout: float, poll_seconds: float = 0.3
) -> str:
    """'' once the patched pod is Ready with its proxy restarted; why not after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        state = store.read()
        record = state.pods.get(key(plan.namespace, plan.name))
        if record is None:
            return f"pod {plan.name} is gone"
        if is_upgraded(pod_object(record, host_ip=state.network.bridge_ip), plan):
            return ""
        if time.monotonic() >= deadline:
            return f"pod {plan.name} not ready with its new sidecar {timeout:.0f}s after the patch"
        await asyncio.sleep(poll_seconds)
