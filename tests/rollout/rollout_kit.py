"""The in-memory API server (tests/kube's kmock emulator) with revisions installed and pods
injected the way their webhook would have, for the upgrader and the restarter."""

from __future__ import annotations

import contextlib
import copy
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kmock
import yaml
from lightkube import AsyncClient, KubeConfig
from lightkube.config.models import Cluster, User

from sidemesh.inject.engine import Injector
from sidemesh.inject.settings import InjectorSettings
from sidemesh.install import manifests, workload
from sidemesh.install.values import InstallValues
from sidemesh.rollout.restarter import RestartSettings

# The restarter without its production pauses: poll often, wait long enough for a slow host.
FAST = RestartSettings(poll_seconds=0.01, eviction_timeout=30, healthy_timeout=30)

_PLURALS = {
    "ConfigMap": "v1/configmaps",
    "MutatingWebhookConfiguration": "admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
}


@contextlib.asynccontextmanager
async def api_server() -> AsyncIterator[Any]:
    """The emulator, taught `pods/NAME/eviction` (see `enable_evictions`)."""
    kube_tests = str(Path(__file__).resolve().parents[1] / "kube")
    if kube_tests not in sys.path:
        sys.path.append(kube_tests)
    import attrs
    from cluster_emulator import ApiServer

    @attrs.define(kw_only=True)
    class EvictingApiServer(ApiServer):  # type: ignore[misc]
        evictions: Any = attrs.field(default=None, init=False)

        async def _handle(self, request: Any) -> Any:
            if (
                self.evictions is not None
                and getattr(request.resource, "plural", None) == "pods"
                and request.subresource == "eviction"
            ):
                return self.evictions(request)
            return await super()._handle(request)

    async with EvictingApiServer() as api, kmock.Server(api):
        yield api


@contextlib.asynccontextmanager
async def client_for(api: Any) -> AsyncIterator[AsyncClient]:
    config = KubeConfig.from_one(cluster=Cluster(server=str(api.url)), user=User())
    async with AsyncClient(config=config, field_manager="sidemesh-test") as client:
        yield client


def write_kubeconfig(api: Any, path: Path) -> Path:
    """A kubeconfig whose only context is the in-memory API (for the command line)."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "m", "cluster": {"server": str(api.url)}}],
        "users": [{"name": "m", "user": {}}],
        "contexts": [{"name": "m", "context": {"cluster": "m", "user": "m"}}],
        "current-context": "m",
    }))  # fmt: skip
    return path


def values(tag: str) -> InstallValues:
    return InstallValues.model_validate({"global": {"tag": tag}})


def install_revision(api: Any, revision: str, tag: str) -> Injector:
    """The revision's webhook configuration and ConfigMaps; its injector, for making pods."""
    chosen = values(tag)
    for obj in (
        manifests.injector_webhook(chosen, revision),
        workload.injector_configmap(chosen, revision),
        workload.mesh_configmap(chosen, revision),
    ):
        api.store(_PLURALS[obj["kind"]], obj)
    return Injector(
        InjectorSettings(
            revision=revision,
            config=chosen.injector_config(),
            values=chosen.injector_values(revision),
            mesh=chosen.mesh_config,
        )
    )


def add_namespace(api: Any, name: str, labels: dict[str, str]) -> None:
    api.store("v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                             "metadata": {"name": name, "labels": labels}})  # fmt: skip


def app_pod(name: str, namespace: str, deployment: str = "web") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": deployment, "pod-template-hash": "5c8d"},
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{deployment}-5c8d",
                 "uid": f"rs-{deployment}", "controller": True}
            ],
        },
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
    }  # fmt: skip


def add_pod(api: Any, pod: dict[str, Any], injector: Injector | None) -> dict[str, Any]:
    namespace = pod["metadata"]["namespace"]
    stored = injector.inject(copy.deepcopy(pod), namespace) if injector else copy.deepcopy(pod)
    stored["spec"]["nodeName"] = "node-1"
    stored["status"] = {"phase": "Running"}
    api.store("v1/pods", stored)
    live: dict[str, Any] = api.stored("v1/pods", namespace, pod["metadata"]["name"])
    return live


def ready_status() -> dict[str, Any]:
    return {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}


def add_deployment(api: Any, namespace: str, name: str, replicas: int = 1) -> None:
    api.store("apps/v1/deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "app", "image": "app:1"}]}}},
    })  # fmt: skip


def add_budget(api: Any, namespace: str, app: str, allowed: int) -> None:
    """A PodDisruptionBudget (`maxUnavailable: 0` while `allowed` is 0), with the status the
    disruption controller would keep."""
    api.store("policy/v1/poddisruptionbudgets", {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": app, "namespace": namespace},
        "spec": {"maxUnavailable": allowed, "selector": {"matchLabels": {"app": app}}},
        "status": {"disruptionsAllowed": allowed},
    })  # fmt: skip


def events(api: Any, namespace: str) -> list[tuple[str, str, str]]:
    """(involved kind/name, type, reason) of the Events recorded in `namespace`."""
    found = []
    for (resource, ns, _), obj in api.objects.items():
        if getattr(resource, "plural", None) == "events" and ns == namespace and not obj.deleted:
            raw = obj.raw
            involved = raw["involvedObject"]
            found.append((f"{involved['kind']}/{involved['name']}", raw["type"], raw["reason"]))
    return found


def enable_evictions(api: Any, replace: Any) -> list[str]:
    """Teach the emulator `pods/NAME/eviction`: refused with 429 while a matching
    PodDisruptionBudget allows no disruption (as the API server does), else the pod is deleted
    and `replace(pod)` plays the ReplicaSet controller. Returns the evicted pods' names."""
    import aiohttp.web
    import kmock

    evicted: list[str] = []

    def handle(request: Any) -> Any:
        pod = api.stored("v1/pods", request.namespace, request.name)
        if pod is None:
            raise kmock.KubernetesError(status=404, reason="NotFound", message="pod not found")
        labels = pod["metadata"].get("labels", {})
        for (res, ns, _), obj in list(api.objects.items()):
            if getattr(res, "plural", None) != "poddisruptionbudgets" or ns != request.namespace:
                continue
            if obj.deleted:
                continue
            budget = obj.raw
            wanted = budget["spec"]["selector"]["matchLabels"]
            matches = all(labels.get(k) == v for k, v in wanted.items())
            if matches and budget.get("status", {}).get("disruptionsAllowed", 0) < 1:
                raise kmock.KubernetesError(
                    status=429, reason="TooManyRequests",
                    message="Cannot evict pod as it would violate the pod's disruption "
                    f"budget {budget['metadata']['name']}.",
                )  # fmt: skip
        api.objects[kmock.resource("v1/pods"), request.namespace, request.name].delete()
        evicted.append(request.name)
        replace(pod)
        return aiohttp.web.json_response({"kind": "Status", "status": "Success"}, status=201)

    api.evictions = handle
    return evicted
