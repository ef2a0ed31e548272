"""Registries: YAML files and Kubernetes watches feed one builder; snapshots are debounced."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from xds_testkit import eventually, kube_client

from sidemesh.api.config import MeshConfig
from sidemesh.xds.builder import SnapshotBuilder
from sidemesh.xds.model import MeshSnapshot
from sidemesh.xds.registry_files import FileRegistry, RegistryFileError, load_snapshot
from sidemesh.xds.registry_kube import KubeRegistry

SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: tcp-admin, port: 9000, targetPort: admin}
  - {name: grpc-api, port: 9090, appProtocol: grpc}
  - {name: dns, port: 53, protocol: UDP}
---
apiVersion: v1
kind: Pod
metadata: {name: web-abc, namespace: demo, labels: {app: web, security.istio.io/tlsMode: istio}}
spec:
  serviceAccountName: web
  containers: [{name: app, ports: [{name: admin, containerPort: 9001}]}]
status: {podIP: 10.0.0.5, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1, namespace: demo}
spec: {address: 10.1.0.9, labels: {app: web}, serviceAccount: vm, ports: {http: 8081}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: demo}
spec: {mtls: {mode: STRICT}}
"""

SLICED = """
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: db, namespace: data}
  spec: {clusterIP: 10.96.0.11, selector: {app: db}, ports: [{name: tcp, port: 5432}]}
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: db-x1, namespace: data, labels: {kubernetes.io/service-name: db}}
  ports: [{name: tcp, port: 5432}]
  endpoints:
  - addresses: [10.0.0.6]
    conditions: {ready: true}
    targetRef: {kind: Pod, name: db-0, namespace: data}
  - addresses: [10.0.0.7]
    conditions: {ready: false}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_files_give_services_ports_endpoints_and_policies(tmp_path: Path) -> None:
    write(tmp_path, "web.yaml", SERVICES)
    write(tmp_path, "db.yml", SLICED)
    snapshot = load_snapshot([tmp_path])
    web = snapshot.services_by_host["web.demo.svc.cluster.local"]
    assert [(p.port, p.protocol) for p in web.ports] == [(80, "HTTP"), (9000, "TCP"),
                                                         (9090, "GRPC")]  # fmt: skip
    endpoints = snapshot.endpoints[web.hostname]
    pod_http = [e for e in endpoints if e.address == "10.0.0.5" and e.service_port == 80]
    assert pod_http[0].port == 8080 and pod_http[0].has_sidecar
    assert pod_http[0].service_account == "web"
    assert [e.port for e in endpoints if e.address == "10.0.0.5" and e.service_port == 9000] == [
        9001
    ]
    vm = [e for e in endpoints if e.address == "10.1.0.9"]
    # unmapped ports use the target port (9090); a named target it lacks is skipped (admin)
    assert [(e.port, e.service_account) for e in vm] == [(8081, "vm"), (9090, "vm")]
    db = snapshot.endpoints["db.data.svc.cluster.local"]
    assert [(e.address, e.ready) for e in db] == [("10.0.0.6", True), ("10.0.0.7", False)]
    assert snapshot.mtls_mode("demo", {}, 80) == "STRICT"
    assert snapshot.mtls_mode("data", {}, 80) == "PERMISSIVE"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "kind: Service\nmetadata: {name: x}\nspec: {ports: [{name: a}]}\n",
            "bad.yaml#1 (Service): Service default/x: spec.ports[0].port",
        ),
        ("---\n- 1\n", "bad.yaml#1: expected an object"),
        (
            "kind: PeerAuthentication\nmetadata: {name: p}\nspec: {mtls: {mode: SOMETIMES}}\n",
            "spec.mtls.mode 'SOMETIMES'",
        ),
        ("a: [", "bad.yaml:2: not valid YAML"),
    ],
)
def test_file_errors_name_file_and_document(tmp_path: Path, text: str, needle: str) -> None:
    write(tmp_path, "bad.yaml", text)
    with pytest.raises(RegistryFileError) as error:
        load_snapshot([tmp_path / "bad.yaml"])
    assert needle in str(error.value)


async def test_builder_debounces_a_burst_into_one_snapshot() -> None:
    published: list[MeshSnapshot] = []
    builder = SnapshotBuilder(published.append, debounce=0.05, max_delay=1.0)
    task = asyncio.create_task(builder.run())
    try:
        for index in range(20):
            builder.upsert(
                {
                    "kind": "Service",
                    "metadata": {"name": f"s{index}", "namespace": "a"},
                    "spec": {"clusterIP": f"10.0.0.{index}", "ports": [{"port": 80}]},
                }
            )
        await eventually(lambda: published)
        assert len(published[0].services) == 20
        assert "Service/a/s7" in published[0].changed
        # The next change is the barrier: had the burst made a second snapshot, it would come
        # before this one (or be merged into it).
        builder.delete("Service", "a", "s7")
        await eventually(lambda: len(published[-1].services) == 19)
        assert len(published) == 2
        assert published[1].changed == frozenset({"Service/a/s7"})
    finally:
        task.cancel()


async def test_file_registry_reloads_changed_files(tmp_path: Path, caplog: Any) -> None:
    path = write(tmp_path, "web.yaml", SERVICES)
    published: list[MeshSnapshot] = []
    registry = FileRegistry([tmp_path], debounce=0.01, poll=0.05)
    task = asyncio.create_task(registry.run(published.append))
    try:
        await eventually(lambda: published)
        path.write_text(SERVICES + "\n---\n" + SLICED)
        await eventually(lambda: "db.data.svc.cluster.local" in published[-1].services_by_host)
        seen = len(published)
        path.write_text("a: [")  # a broken edit keeps the last good state
        await eventually(lambda: "registry files not reloaded" in caplog.text)
        assert "db.data.svc.cluster.local" in published[-1].services_by_host
        # and publishes nothing: the next good edit is the next snapshot
        path.write_text(SERVICES)
        await eventually(lambda: "db.data.svc.cluster.local" not in published[-1].services_by_host)
        assert len(published) == seen + 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def seed(
    kmock: Any, group: str, version: str, plural: str, namespace: str | None, obj: dict[str, Any]
) -> None:
    kmock.objects[kmock.resource(group, version, plural), namespace, obj["metadata"]["name"]] = obj


async def test_kube_registry_follows_watches(kmock: Any) -> None:
    client = kube_client(kmock)
    seed(
        kmock,
        "",
        "v1",
        "namespaces",
        None,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "data"}},
    )
    seed(
        kmock,
        "",
        "v1",
        "services",
        "data",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "db", "namespace": "data"},
            "spec": {"clusterIP": "10.96.0.11", "ports": [{"name": "tcp", "port": 5432}]},
        },
    )
    seed(
        kmock,
        "",
        "v1",
        "pods",
        "data",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "db-0",
                "namespace": "data",
                "labels": {"app": "db", "security.istio.io/tlsMode": "istio"},
            },
            "spec": {"serviceAccountName": "db", "containers": [{"name": "db", "image": "x"}]},
            "status": {"podIP": "10.0.0.6"},
        },
    )
    published: list[MeshSnapshot] = []
    registry = KubeRegistry(client, mesh=MeshConfig(), debounce=0.02)
    task = asyncio.create_task(registry.run(published.append))
    try:
        await eventually(lambda: published and published[-1].services)
        from lightkube.resources.discovery_v1 import EndpointSlice

        await client.create(EndpointSlice.from_dict({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": "db-1", "namespace": "data",
                         "labels": {"kubernetes.io/service-name": "db"}},
            "ports": [{"name": "tcp", "port": 5432}],
            "endpoints": [{"addresses": ["10.0.0.6"], "conditions": {"ready": True},
                           "targetRef": {"kind": "Pod", "name": "db-0", "namespace": "data"}}],
        }))  # fmt: skip

        def endpoints() -> Any:
            return published[-1].endpoints.get("db.data.svc.cluster.local")

        found = await eventually(endpoints)
        assert [(e.address, e.service_account, e.has_sidecar) for e in found] == [
            ("10.0.0.6", "db", True)
        ]
        assert any("EndpointSlice/data/db-1" in s.changed for s in published)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class _NotFound(Exception):
    """Stands in for lightkube's ApiError: the status travels on `.response.status_code`."""

    class response:  # the attribute name of httpx errors
        status_code = 404


class _ClusterWithoutIstioCrds:
    """Serves Services and nothing else; PeerAuthentication answers 404 (CRD absent)."""

    def __init__(self) -> None:
        self.peer_authentication_lists = 0

    def list(self, resource: Any, **_scope: Any) -> Any:
        kind = getattr(resource, "_api_info", None)
        name = kind.resource.kind if kind is not None else ""
        if name == "PeerAuthentication":
            self.peer_authentication_lists += 1
            raise _NotFound("the server could not find the requested resource")
        items = []
        if name == "Service":
            from lightkube.resources.core_v1 import Service

            items = [Service.from_dict({
                "metadata": {"name": "db", "namespace": "data"},
                "spec": {"clusterIP": "10.96.0.11", "ports": [{"name": "tcp", "port": 5432}]},
            })]  # fmt: skip

        class Listed:
            def __aiter__(self) -> Any:
                async def gen() -> Any:
                    for item in items:
                        yield item

                return gen()

        return Listed()

    async def watch(self, resource: Any, **_options: Any) -> Any:
        await asyncio.Event().wait()  # nothing ever changes
        yield None  # pragma: no cover


class _RecordedSleeps:
    """`asyncio` as registry_kube sees it, but its sleeps are recorded, and the long wait
    before looking for a missing CRD again never ends."""

    def __init__(self, endless: float) -> None:
        self.endless = endless
        self.seen: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, seconds: float) -> None:
        self.seen.append(seconds)
        if seconds == self.endless:
            await asyncio.Event().wait()
        await asyncio.sleep(seconds)


async def test_kube_registry_works_without_the_peer_authentication_crd(
    monkeypatch: Any, caplog: Any
) -> None:
    import sidemesh.xds.registry_kube as registry_kube

    monkeypatch.setattr(registry_kube, "RETRY_SECONDS", 0.01)  # a failing watch relists fast
    sleeps = _RecordedSleeps(endless=registry_kube.MISSING_KIND_RETRY_SECONDS)
    monkeypatch.setattr(registry_kube, "asyncio", sleeps)
    client = _ClusterWithoutIstioCrds()
    published: list[MeshSnapshot] = []
    registry = KubeRegistry(client, mesh=MeshConfig(), debounce=0.02)
    task = asyncio.create_task(registry.run(published.append))
    try:
        await eventually(lambda: published and published[-1].services)
        # Asked once, then left alone: a missing CRD is a fact, not an error to retry hard.
        await eventually(lambda: sleeps.endless in sleeps.seen)
        assert registry_kube.RETRY_SECONDS not in sleeps.seen
        assert client.peer_authentication_lists == 1
        assert not [r for r in caplog.records if r.levelname == "WARNING"]
        assert "db.data.svc.cluster.local" in {s.hostname for s in published[-1].services}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
