"""The node agent's loop: what the API server says in, the kubelet's pod workers and the
node's rules and relays out (the design is in `node`)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidemesh.kube.client import describe_error
from sidemesh.local import network
from sidemesh.local.apiserver import allocate_pod_ip, object_data
from sidemesh.local.daemon import this_host_node
from sidemesh.local.kubelet import PodWorker
from sidemesh.local.model import NetworkRecord, PodRecord, SecretRecord, State, key
from sidemesh.local.naming import node_netns, runtime_prefix
from sidemesh.local.node_api import NodeApi
from sidemesh.local.node_objects import (
    Exposed,
    HostService,
    config_record,
    fits,
    host_backed,
    is_unscheduled,
    node_object,
    note_deletion,
    peer_record,
    pod_record,
    pod_status,
    service_record,
)
from sidemesh.local.node_ports import Namespace, Relay, RelayServer
from sidemesh.local.services import hosts_file, proxy_rules, resolv_conf
from sidemesh.local.volumes import Lookup, VolumeError

log = logging.getLogger("sidemesh.local.node")

RESYNC_SECONDS = 1.0
HEARTBEAT_SECONDS = 10.0
TOKEN_SECONDS = 86400


@dataclass(frozen=True)
class NodeSettings:
    kubeconfig: Path
    node_name: str
    state_dir: Path
    host_services: tuple[HostService, ...] = ()
    exposed: tuple[Exposed, ...] = ()
    service_cidr: str = "10.96.0.0/16"


@dataclass
class _Tracked:
    worker: PodWorker
    reported: int = -1  # the worker's version last written to the Pod's status
    posted: set[tuple[str, str, str]] = field(default_factory=set)  # events, posted once


class NodeAgent:
    def __init__(self, settings: NodeSettings, api: NodeApi, host: Namespace, node: Namespace):
        self.settings = settings
        self.api = api
        self.host = host
        self.node_ns = node
        self.network = node_network(settings)
        self.node_labels: dict[str, str] = node_object(settings.node_name)["metadata"]["labels"]
        self.snapshot = State(network=self.network)
        self.pods: dict[str, _Tracked] = {}  # by uid
        self.tokens: dict[tuple[str, str], str] = {}
        self.host_services = list(settings.host_services)
        self.relays: list[RelayServer] = []
        self.wake = asyncio.Event()
        self.stopping = False
        self.last_rules: str | None = None
        self.last_heartbeat = 0.0
        self.created_paths: list[Path] = []
        self.context = this_host_node(
            network=self.network,
            pods_dir=settings.state_dir / "pods",
            lookups=self._lookups,
            token=self._token,
            ensure_mount_point=self._mount_point,
            etc_files=self._etc_files,
        )

    # --- what pods need from the node -------------------------------------------------------

    def _lookups(self, namespace: str) -> tuple[Lookup, Lookup]:
        def config_map(name: str) -> dict[str, str] | None:
            record = self.snapshot.configmaps.get(key(namespace, name))
            return object_data(record) if record is not None else None

        def secret(name: str) -> dict[str, str] | None:
            record = self.snapshot.secrets.get(key(namespace, name))
            return object_data(record) if record is not None else None

        return config_map, secret

    def _token(self, namespace: str, service_account: str) -> str:
        token = self.tokens.get((namespace, service_account))
        if token is None:  # requested before the worker starts; retried with the sandbox
            raise VolumeError(f"no token yet for serviceaccount {namespace}/{service_account}")
        return token

    def _etc_files(self, pod: PodRecord) -> tuple[str, str]:
        pods = [*self.snapshot.pods.values(), pod]
        return hosts_file(pod, self.snapshot.services.values(), pods), resolv_conf(pod.namespace)

    def _mount_point(self, target: str, is_dir: bool) -> None:
        """As the local runtime's daemon: only a mount point right under / is made on the host
        (and removed at shutdown if still empty); `launch` makes deeper ones privately."""
        path = Path(target)
        if path.exists():
            return
        missing = [path, *(p for p in path.parents if not p.exists())]
        if missing[-1].parent != Path("/"):
            return
        self.created_paths += missing
        if is_dir:
            path.mkdir(mode=0o755, parents=True, exist_ok=True)
        else:
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            path.touch()

    def _wakeup(self) -> None:
        self.wake.set()

    # --- relays -----------------------------------------------------------------------------

    async def start_relays(self, api_host: str, api_port: int) -> None:
        """The API server (for us and, as the `kubernetes` Service, for pods), host-backed
        Services and exposed host ports."""
        self.host_services.insert(0, HostService("default", "kubernetes", 443, api_host, api_port))
        listening: set[int] = set()
        relays: list[Relay] = []
        for backing in self.host_services:
            if backing.host_port in listening:
                continue
            listening.add(backing.host_port)
            target = (backing.host, backing.host_port)
            relays.append(
                Relay(
                    name=f"{backing.namespace}/{backing.name}:{backing.port}",
                    listen_in=self.node_ns,
                    listen=("0.0.0.0", backing.host_port),
                    dial_in=self.host,
                    target=functools.partial(_fixed, target),
                )
            )
        for exposed in self.settings.exposed:
            relays.append(
                Relay(
                    name=f"{exposed.host}:{exposed.host_port}",
                    listen_in=self.host,
                    listen=(exposed.host, exposed.host_port),
                    dial_in=self.node_ns,
                    target=functools.partial(self._service_address, exposed),
                )
            )
        for relay in relays:
            server = RelayServer(relay)
            await server.start()
            self.relays.append(server)

    def _service_address(self, exposed: Exposed) -> tuple[str, int] | None:
        service = self.snapshot.services.get(key(exposed.namespace, exposed.name))
        if service is None or not service.cluster_ip:
            return None
        return service.cluster_ip, exposed.port

    # --- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop)
        await self.api.register(self.network.node_name, address=self.network.bridge_ip)
        log.info("node %s registered and ready", self.network.node_name)
        try:
            while not self.stopping:
                self.wake.clear()
                try:
                    await self.reconcile()
                except Exception:
                    log.exception("reconcile failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), RESYNC_SECONDS)
        finally:
            await self.shutdown()

    def _stop(self) -> None:
        self.stopping = True
        self.wake.set()

    async def reconcile(self) -> None:
        now = time.time()
        if now - self.last_heartbeat >= HEARTBEAT_SECONDS:
            await self.api.heartbeat(self.network.node_name, address=self.network.bridge_ip)
            self.last_heartbeat = now
        pods, services, configs = await self.api.list_world()
        self._refresh(services, configs, pods)
        mine = {}
        for pod in pods:
            metadata = pod["metadata"]
            spec = pod.get("spec") or {}
            if spec.get("nodeName") == self.network.node_name:
                mine[str(metadata["uid"])] = pod
            elif is_unscheduled(pod) and fits(pod, self.node_labels):
                await self.api.bind(metadata["namespace"], metadata["name"], self.network.node_name)
        await self._run_pods(mine)
        await self._report()
        await self._apply_network()

    def _refresh(
        self,
        services: list[dict[str, Any]],
        configs: list[dict[str, Any]],
        pods: list[dict[str, Any]],
    ) -> None:
        records = [service_record(s) for s in services]
        self.snapshot.services, stand_ins = host_backed(
            records, self.host_services, self.network.bridge_ip
        )
        self.snapshot.configmaps, self.snapshot.secrets = {}, {}
        for obj in configs:
            record = config_record(obj)
            if isinstance(record, SecretRecord):
                self.snapshot.secrets[key(record.namespace, record.name)] = record
            else:
                self.snapshot.configmaps[key(record.namespace, record.name)] = record
        peers: dict[str, PodRecord] = {}
        for pod in pods:
            peer = peer_record(pod)
            if peer is not None:
                peers[key(peer.namespace, peer.name)] = peer
        for tracked in self.pods.values():  # our own, with the freshest view of readiness
            live = tracked.worker.pod
            peers[key(live.namespace, live.name)] = live
        for stand_in in stand_ins:
            peers[key(stand_in.namespace, stand_in.name)] = stand_in
        self.snapshot.pods = peers

    async def _run_pods(self, mine: dict[str, dict[str, Any]]) -> None:
        for uid, pod in mine.items():
            tracked = self.pods.get(uid)
            if tracked is None:
                metadata = pod["metadata"]
                if metadata.get("deletionTimestamp"):  # nothing of it runs here: let it go
                    await self.api.delete_pod(metadata["namespace"], metadata["name"], uid=uid)
                    continue
                if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                    continue  # finished under an earlier agent: it never runs again
                tracked = await self._start(pod)
            note_deletion(tracked.worker.pod, pod)
            if tracked.worker.pod.deletion_requested is not None:
                tracked.worker.terminate(tracked.worker.pod.grace_seconds)
            else:
                tracked.worker.follow(pod)  # in-place changes: metadata, container images
        for uid, tracked in list(self.pods.items()):
            live = tracked.worker.pod
            if uid not in mine:
                tracked.worker.terminate(0)  # gone from the server: stop at once
            if tracked.worker.done:
                del self.pods[uid]
                if uid in mine and live.deletion_requested is not None:
                    await self.api.delete_pod(live.namespace, live.name, uid=uid)

    async def _start(self, pod: dict[str, Any]) -> _Tracked:
        await self._ensure_token(str(pod["metadata"]["namespace"]), _account(pod))
        record = pod_record(pod, network=self.network, pod_ip=allocate_pod_ip(self.snapshot))
        self.snapshot.pods[key(record.namespace, record.name)] = record
        worker = PodWorker(record, self.context, self._wakeup)
        tracked = _Tracked(worker=worker)
        self.pods[record.uid] = tracked
        worker.start()
        log.info("pod %s/%s started at %s", record.namespace, record.name, record.pod_ip)
        return tracked

    async def _ensure_token(self, namespace: str, account: str) -> None:
        if (namespace, account) in self.tokens:
            return
        try:
            self.tokens[(namespace, account)] = await self.api.token(
                namespace, account, seconds=TOKEN_SECONDS
            )
        except Exception as exc:  # the sandbox waits (FailedMount) and we ask again
            log.warning("token for %s/%s: %s", namespace, account, describe_error(exc))

    async def _report(self) -> None:
        for tracked in list(self.pods.values()):
            worker = tracked.worker
            pod = worker.pod
            events, worker.events = worker.events, []
            for kind, reason, message in events:
                log.info("pod %s/%s %s %s: %s", pod.namespace, pod.name, kind, reason, message)
                if (kind, reason, message) not in tracked.posted:  # a repeat is not news
                    tracked.posted.add((kind, reason, message))
                    await self.api.event(pod, kind, reason, message)
            await self._ensure_token(pod.namespace, _account(pod.manifest))
            if worker.done or tracked.reported == worker.version:
                continue
            version = worker.version
            status = pod_status(pod, host_ip=self.network.bridge_ip)
            if await self.api.patch_pod_status(pod.namespace, pod.name, status):
                tracked.reported = version

    async def _apply_network(self) -> None:
        rules = proxy_rules(self.snapshot.services.values(), self.snapshot.pods.values())
        if rules != self.last_rules:
            await asyncio.to_thread(network.apply_proxy_rules, self.network, rules)
            self.last_rules = rules
        for tracked in self.pods.values():
            record = tracked.worker.pod
            if record.netns and (network.NETNS_ETC / record.netns).is_dir():
                hosts, resolv = self._etc_files(record)
                network.write_netns_etc(record.netns, hosts=hosts, resolv_conf=resolv)

    async def shutdown(self) -> None:
        """Stop every pod (graceful node shutdown), the relays, and remove the node's namespace
        and the mount points we created. The Node and the Pod objects stay on the server."""
        for tracked in self.pods.values():
            tracked.worker.terminate(None)
        while any(not t.worker.done for t in self.pods.values()):
            await asyncio.sleep(0.1)
        for relay in self.relays:
            await relay.stop()
        await asyncio.to_thread(
            network.run, ["ip", "netns", "del", self.network.node_netns], check=False
        )
        for path in sorted(self.created_paths, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                if path.is_dir():
                    path.rmdir()
                elif path.stat().st_size == 0:
                    path.unlink()
        await self.api.close()


def _fixed(address: tuple[str, int]) -> tuple[str, int]:
    return address


def node_network(settings: NodeSettings) -> NetworkRecord:
    """The node's network: names from the state directory (as the local runtime's), so two
    nodes on one host never share a namespace."""
    prefix = runtime_prefix(settings.state_dir)
    return NetworkRecord(
        prefix=prefix,
        node_netns=node_netns(prefix),
        node_name=settings.node_name,
        service_cidr=settings.service_cidr,
    )


def _account(pod: dict[str, Any]) -> str:
    return str((pod.get("spec") or {}).get("serviceAccountName") or "default")
