"""The node agent's decisions, against a fake API server and fake pod workers: which pods it
binds, which it runs, what it reports, when it deletes (with grace 0, only once the pod has
stopped), and how the `kubernetes` Service reaches the API server through the node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sidemesh.local import network
from sidemesh.local import node_agent as node_module
from sidemesh.local.model import PodRecord
from sidemesh.local.node_agent import NodeAgent, NodeSettings
from sidemesh.local.node_objects import HostService
from sidemesh.local.node_ports import Namespace

NODE = "node-a"


class FakeApi:
    def __init__(self) -> None:
        self.pods: list[dict[str, Any]] = []
        self.services: list[dict[str, Any]] = []
        self.bound: list[tuple[str, str, str]] = []
        self.statuses: dict[str, dict[str, Any]] = {}
        self.deleted: list[tuple[str, str, str]] = []
        self.events: list[tuple[str, str]] = []

    async def heartbeat(self, name: str, *, address: str) -> None:
        pass

    async def list_world(self) -> tuple[list[Any], list[Any], list[Any]]:
        return self.pods, self.services, []

    async def bind(self, namespace: str, name: str, node: str) -> bool:
        self.bound.append((namespace, name, node))
        return True

    async def token(self, namespace: str, account: str, *, seconds: int) -> str:
        return f"token-of-{namespace}-{account}"

    async def patch_pod_status(self, namespace: str, name: str, status: dict[str, Any]) -> bool:
        self.statuses[f"{namespace}/{name}"] = status
        return True

    async def delete_pod(self, namespace: str, name: str, *, uid: str) -> bool:
        self.deleted.append((namespace, name, uid))
        return True

    async def event(self, pod: PodRecord, kind: str, reason: str, message: str) -> None:
        self.events.append((pod.name, reason))


class FakeWorker:
    """Stands in for `kubelet.PodWorker`: starts "running", stops when told to and then
    finishes when the test says so."""

    def __init__(self, pod: PodRecord, context: Any, on_change: Any) -> None:
        self.pod = pod.model_copy(deep=True)
        self.events: list[tuple[str, str, str]] = []
        self.version = 0
        self.done = False
        self.terminated: list[int | None] = []

    def start(self) -> None:
        self.pod.phase = "Running"
        self.events.append(("Normal", "Started", "Started container web"))
        self.version += 1

    def terminate(self, grace_seconds: int | None) -> None:
        self.terminated.append(grace_seconds)

    def follow(self, pod: dict[str, Any]) -> None:
        """In-place changes (metadata, images) are `kubelet.PodWorker`'s; nothing to follow."""


APPLIED_RULES: list[str] = []


@pytest.fixture
def agent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> NodeAgent:
    monkeypatch.setattr(node_module, "PodWorker", FakeWorker)
    APPLIED_RULES.clear()
    monkeypatch.setattr(
        network, "apply_proxy_rules", lambda network, rules: APPLIED_RULES.append(rules)
    )
    here = Namespace.current()
    settings = NodeSettings(kubeconfig=tmp_path / "kubeconfig", node_name=NODE, state_dir=tmp_path)
    return NodeAgent(settings, FakeApi(), here, here)  # type: ignore[arg-type]


def api(agent: NodeAgent) -> FakeApi:
    fake = agent.api
    assert isinstance(fake, FakeApi)
    return fake


def pod(name: str, *, node: str | None = NODE, **metadata: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "web", "command": ["sleep", "9"]}]}
    if node:
        spec["nodeName"] = node
    return {
        "metadata": {"name": name, "namespace": "demo", "uid": f"uid-{name}", **metadata},
        "spec": spec,
        "status": {"phase": "Pending"},
    }


def worker(agent: NodeAgent, uid: str) -> FakeWorker:
    found = agent.pods[uid].worker
    assert isinstance(found, FakeWorker)
    return found


async def test_pending_pods_are_bound_here_and_others_left_alone(agent: NodeAgent) -> None:
    api(agent).pods = [pod("waiting", node=None), pod("elsewhere", node="node-b")]
    await agent.reconcile()
    assert api(agent).bound == [("demo", "waiting", NODE)]
    assert agent.pods == {}


async def test_a_pod_bound_here_runs_and_its_status_is_reported(agent: NodeAgent) -> None:
    api(agent).pods = [pod("web")]
    await agent.reconcile()
    assert worker(agent, "uid-web").pod.pod_ip == "10.244.0.2"
    assert agent.tokens[("demo", "default")] == "token-of-demo-default"
    status = api(agent).statuses["demo/web"]
    assert (status["phase"], status["podIP"]) == ("Running", "10.244.0.2")
    assert ("web", "Started") in api(agent).events
    api(agent).statuses.clear()
    running = worker(agent, "uid-web")
    running.events.append(("Normal", "Started", "Started container web"))
    await agent.reconcile()  # nothing changed, and a repeated event is not news
    assert api(agent).statuses == {}
    assert api(agent).events == [("web", "Started")]


async def test_graceful_deletion_stops_the_pod_then_deletes_it(agent: NodeAgent) -> None:
    api(agent).pods = [pod("web")]
    await agent.reconcile()
    api(agent).pods = [
        pod("web", deletionTimestamp="2026-01-01T00:00:00Z", deletionGracePeriodSeconds=4)
    ]
    await agent.reconcile()
    running = worker(agent, "uid-web")
    assert running.terminated == [4]
    assert api(agent).deleted == []  # not before it has stopped
    running.done = True
    await agent.reconcile()
    assert api(agent).deleted == [("demo", "web", "uid-web")]
    assert agent.pods == {}


async def test_a_pod_gone_from_the_server_is_stopped_at_once(agent: NodeAgent) -> None:
    api(agent).pods = [pod("web")]
    await agent.reconcile()
    running = worker(agent, "uid-web")
    api(agent).pods = []
    await agent.reconcile()
    assert running.terminated[-1] == 0
    assert api(agent).deleted == []


async def test_a_deleted_pod_that_never_ran_here_is_let_go(agent: NodeAgent) -> None:
    api(agent).pods = [pod("web", deletionTimestamp="2026-01-01T00:00:00Z")]
    await agent.reconcile()
    assert agent.pods == {}
    assert api(agent).deleted == [("demo", "web", "uid-web")]


async def test_the_kubernetes_service_reaches_the_api_server_through_the_node(
    agent: NodeAgent,
) -> None:
    agent.host_services = [HostService("default", "kubernetes", 443, "127.0.0.1", 34463)]
    api(agent).services = [
        {
            "metadata": {"name": "kubernetes", "namespace": "default", "uid": "u"},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443}]},
        }
    ]
    await agent.reconcile()
    rules = APPLIED_RULES[-1]
    assert "-d 10.96.0.1/32 -p tcp -m tcp --dport 443" in rules
    assert "--to-destination 10.244.0.1:34463" in rules
