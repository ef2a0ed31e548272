"""The runtime's daemon: controllers, admission and the kubelet, in one process.

Protocol with the CLI: the state file is the API (the CLI writes desired objects under the
lock, the daemon writes status back under the same lock), and a datagram on
`<state>/wakeup.sock` says "look now" (the daemon also looks every second). The daemon holds
`daemon.lock` for its whole life, so "is it running" is a lock test that cannot be fooled by a
stale pid file; a new daemon after a crash adopts the pods in the state (their orphaned
processes are killed and the pods' sandboxes rebuilt).

It moves itself into the node's network namespace before it starts any thread, so probes and
webhook calls come from the node, as a kubelet's and an API server's would. Network changes
are always made with an explicit namespace (`network`), never through that.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from sidemesh.api import names
from sidemesh.local import network
from sidemesh.local.admission import AdmissionError, admit, apply_pod_defaults
from sidemesh.local.apiserver import allocate_pod_ip, object_data, store_admitted_pod
from sidemesh.local.controllers import (
    PodRequest,
    reconcile_deployments,
    reconcile_replicasets,
    record_create_failure,
    record_create_success,
)
from sidemesh.local.controlplane import promote_failure_policies, stamp_mesh_config
from sidemesh.local.kubelet import NodeContext, PodWorker
from sidemesh.local.mesh_config import MESH_KEY, mesh_dir, mesh_text
from sidemesh.local.model import NetworkRecord, PodRecord, State, key
from sidemesh.local.naming import pod_netns, veth_name
from sidemesh.local.netns import enter_netns
from sidemesh.local.node_ports import HostPortRelays, Namespace
from sidemesh.local.paths import RuntimePaths
from sidemesh.local.pki import LocalPki
from sidemesh.local.prometheus import write_targets
from sidemesh.local.services import (
    gateway_credentials,
    host_ports,
    hosts_file,
    proxy_rules,
    registry_objects,
    resolv_conf,
)
from sidemesh.local.store import Store
from sidemesh.local.volumes import Lookup, TokenSource
from sidemesh.security.files import write_atomically

log = logging.getLogger("sidemesh.local.daemon")

RESYNC_SECONDS = 1.0
MAX_GRACE_SECONDS = 10.0  # grace periods are capped locally: `down` and rollouts stay quick


def sidemesh_command() -> tuple[list[str], str]:
    """How the sidemesh image's entrypoint runs here, and the directory to put on its PATH."""
    bin_dir = Path(sys.executable).parent
    script = bin_dir / "sidemesh"
    if script.exists():
        return [str(script)], str(bin_dir)
    return [sys.executable, "-c", "from sidemesh.cli.main import main; main()"], str(bin_dir)


def this_host_node(
    *,
    network: NetworkRecord,
    pods_dir: Path,
    lookups: Callable[[str], tuple[Lookup, Lookup]],
    token: TokenSource,
    ensure_mount_point: Callable[[str, bool], None],
    etc_files: Callable[[PodRecord], tuple[str, str]],
) -> NodeContext:
    """What pod workers on this host share, whoever feeds them pods (the local runtime's own
    API or a real API server's, `local node`)."""
    sidemesh_argv, sidemesh_bin = sidemesh_command()
    source_root = str(Path(__file__).resolve().parent.parent.parent)
    return NodeContext(
        network=network,
        pods_dir=pods_dir,
        python=sys.executable,
        launcher_env={
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "PYTHONPATH": source_root,
            "PYTHONDONTWRITEBYTECODE": "1",
        },
        sidemesh_argv=sidemesh_argv,
        sidemesh_bin=sidemesh_bin,
        expose=exposed_paths(),
        lookups=lookups,
        token=token,
        ensure_mount_point=ensure_mount_point,
        etc_files=etc_files,
        clock=time.time,
        node_cpus=os.cpu_count() or 1,
        node_memory_bytes=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        max_grace_seconds=MAX_GRACE_SECONDS,
    )


def exposed_paths() -> list[str]:
    """This Python installation: what non-root containers need to be able to reach."""
    import sidemesh

    candidates = {
        os.path.realpath(sys.base_prefix),
        os.path.realpath(sys.prefix),
        os.path.realpath(Path(sidemesh.__file__).parent.parent),
    }
    candidates |= {os.path.realpath(p) for p in sys.path if p and os.path.isdir(p)}
    ordered = sorted(candidates - {"/"})
    return [p for p in ordered if not any(p != q and p.startswith(q + "/") for q in ordered)]


class Daemon:
    def __init__(self, paths: RuntimePaths, store: Store, pki: LocalPki) -> None:
        self.paths = paths
        self.store = store
        self.pki = pki
        self.root_pem = pki.root_pem()
        self.snapshot = store.read()
        self.workers: dict[str, PodWorker] = {}
        self.flushed: dict[str, int] = {}
        self.in_flight: dict[str, int] = {}
        self.admissions: set[asyncio.Task[None]] = set()
        self.wake = asyncio.Event()
        self.stopping = False
        self.last_rules: str | None = None
        self.last_registry: str | None = None
        self.mesh_texts: dict[str, str] = {}  # revision -> its `mesh` file as last written
        self.host_ports: HostPortRelays | None = None  # set by main(): needs the host's netns
        self.host_port_problems: set[str] = set()
        self.node = this_host_node(
            network=self.snapshot.network,
            pods_dir=paths.pods,
            lookups=self._lookups,
            token=pki.token,
            ensure_mount_point=self._mount_point,
            etc_files=self._etc_files,
        )

    # --- what pods need from the node -------------------------------------------------------

    def _lookups(self, namespace: str) -> tuple[Lookup, Lookup]:
        def config_map(name: str) -> dict[str, str] | None:
            record = self.snapshot.configmaps.get(key(namespace, name))
            if record is None and name == names.CONFIGMAP_CA_ROOT:
                return {"root-cert.pem": self.root_pem}  # what istiod publishes everywhere
            return object_data(record) if record is not None else None

        def secret(name: str) -> dict[str, str] | None:
            record = self.snapshot.secrets.get(key(namespace, name))
            return object_data(record) if record is not None else None

        return config_map, secret

    def _etc_files(self, pod: PodRecord) -> tuple[str, str]:
        snapshot = self.snapshot
        current = snapshot.pods.get(key(pod.namespace, pod.name), pod)
        hosts = hosts_file(current, snapshot.services.values(), snapshot.pods.values())
        return hosts, resolv_conf(pod.namespace)

    def _mount_point(self, target: str, is_dir: bool) -> None:
        """Create a volume's mount point right under / on the host, recorded first so `down`
        removes it. Deeper ones `launch` makes privately, in the container's mount namespace."""
        path = Path(target)
        if path.exists():
            return
        missing = [path, *(p for p in path.parents if not p.exists())]
        if missing[-1].parent != Path("/"):
            return
        with self.store.transaction() as state:
            for created in reversed(missing):
                if str(created) not in state.host_paths:
                    state.host_paths.append(str(created))
        if is_dir:
            path.mkdir(mode=0o755, parents=True, exist_ok=True)
        else:
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            path.touch()

    def _wakeup(self) -> None:
        self.wake.set()

    # --- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop)
        listener = self._listen(loop)
        self._recover()
        log.info("local runtime daemon running (state %s)", self.paths.root)
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
            loop.remove_reader(listener.fileno())
            listener.close()
            if self.host_ports is not None:
                await self.host_ports.stop()

    def _stop(self) -> None:
        self.stopping = True
        self.wake.set()

    def _listen(self, loop: asyncio.AbstractEventLoop) -> socket.socket:
        path = self.paths.wakeup_socket
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.bind(str(path))
        os.chmod(path, 0o600)
        listener.setblocking(False)

        def drain() -> None:
            with contextlib.suppress(BlockingIOError):
                while True:
                    listener.recv(64)
            self.wake.set()

        loop.add_reader(listener.fileno(), drain)
        return listener

    def _recover(self) -> None:
        """Kill what a previous daemon left running; its pods are then started afresh."""
        for pod in self.snapshot.pods.values():
            if pod.netns and pod.netns in network.list_netns():
                for pid in network.netns_pids(pod.netns):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)

    async def reconcile(self) -> None:
        now = time.time()
        with self.store.transaction() as state:
            self._collect(state)
            promote_failure_policies(state, now)
            stamp_mesh_config(state, now)
            self._write_mesh_files(state, now)  # before any control-plane pod can start
            reconcile_deployments(state, now)
            requests = reconcile_replicasets(state, now, self.in_flight)
            self._run_pods(state, now)
            self.snapshot = state.model_copy(deep=True)
        for request in requests:
            self._admit_later(request)
        await self._apply_network(self.snapshot)

    def _collect(self, state: State) -> None:
        """Copy the workers' status into the state; forget finished pods."""
        for uid, worker in list(self.workers.items()):
            pod_key = key(worker.pod.namespace, worker.pod.name)
            record = state.pods.get(pod_key)
            for kind, reason, message in worker.events:
                state.record_event(
                    namespace=worker.pod.namespace,
                    object=f"pod/{worker.pod.name}",
                    type="Warning" if kind == "Warning" else "Normal",
                    reason=reason,
                    message=message,
                    now=time.time(),
                )
            worker.events.clear()
            if worker.done:
                if record is not None and record.uid == uid:
                    del state.pods[pod_key]
                del self.workers[uid]
                self.flushed.pop(uid, None)
                continue
            if record is None or record.uid != uid:
                worker.terminate(None)
                continue
            if self.flushed.get(uid) != worker.version:
                live = worker.pod
                record.phase, record.initialized, record.ready = (
                    live.phase,
                    live.initialized,
                    live.ready,
                )
                record.init_statuses = [s.model_copy() for s in live.init_statuses]
                record.statuses = [s.model_copy() for s in live.statuses]
                self.flushed[uid] = worker.version

    def _run_pods(self, state: State, now: float) -> None:
        for record in state.pods.values():
            worker = self.workers.get(record.uid)
            if worker is None:
                if record.pod_ip is None:
                    record.pod_ip = allocate_pod_ip(state)
                if record.netns is None:
                    record.netns = pod_netns(state.network.prefix, record.uid)
                    record.veth = veth_name(record.uid)
                    state.record_event(
                        namespace=record.namespace,
                        object=f"pod/{record.name}",
                        type="Normal",
                        reason="Scheduled",
                        now=now,
                        message=f"Successfully assigned {record.namespace}/{record.name} to "
                        f"{state.network.node_name}",
                    )
                worker = PodWorker(record, self.node, self._wakeup)
                self.workers[record.uid] = worker
                worker.start()
            if record.deletion_requested is not None:
                worker.terminate(record.grace_seconds)
            else:
                worker.follow(record.manifest)  # in-place changes: metadata, images

    def _write_mesh_files(self, state: State, now: float) -> None:
        """Each control plane's MeshConfig file (`mesh_config`), from its `istio[-REV]`
        ConfigMap; its running discovery re-reads it."""
        for revision in state.control_planes:
            text = mesh_text(state.configmaps, revision)
            if self.mesh_texts.get(revision) == text:
                continue
            directory = mesh_dir(self.paths.root, revision)
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)
            write_atomically(directory / MESH_KEY, text.encode(), 0o644)
            if revision in self.mesh_texts:
                state.record_event(
                    namespace=names.CONTROL_PLANE_NAMESPACE,
                    object=f"deployment/{names.service_name(revision)}",
                    type="Normal",
                    reason="MeshConfigUpdated",
                    message=f"control plane {revision!r}: MeshConfig handed over (re-read live)",
                    now=now,
                )
            self.mesh_texts[revision] = text

    # --- admission --------------------------------------------------------------------------

    def _admit_later(self, request: PodRequest) -> None:
        self.in_flight[request.replicaset] = self.in_flight.get(request.replicaset, 0) + 1
        task = asyncio.create_task(self._admit(request))
        self.admissions.add(task)
        task.add_done_callback(self.admissions.discard)

    async def _admit(self, request: PodRequest) -> None:
        snapshot = self.snapshot
        namespace = str(request.pod["metadata"]["namespace"])
        try:
            labels = (
                snapshot.namespaces[namespace].labels if namespace in snapshot.namespaces else {}
            )
            result = await asyncio.to_thread(
                admit,
                apply_pod_defaults(request.pod),
                namespace,
                namespace_labels=labels,
                control_planes=list(snapshot.control_planes.values()),
                services=snapshot.services,
                ca_pem=self.root_pem,
                connect=_connect,
            )
        except AdmissionError as exc:
            with self.store.transaction() as state:
                record_create_failure(state, request.replicaset, str(exc), time.time())
        else:
            with self.store.transaction() as state:
                replicaset = state.replicasets.get(request.replicaset)
                if replicaset is not None:
                    now = time.time()
                    pod = store_admitted_pod(state, result.pod, owner=replicaset.name, now=now)
                    record_create_success(state, request.replicaset, pod.name, now)
                    for warning in result.warnings:
                        state.record_event(
                            namespace=namespace,
                            object=f"pod/{pod.name}",
                            type="Warning",
                            reason="AdmissionWarning",
                            message=warning,
                            now=now,
                        )
        finally:
            self.in_flight[request.replicaset] -= 1
            self.wake.set()

    # --- network ----------------------------------------------------------------------------

    async def _apply_network(self, snapshot: State) -> None:
        rules = proxy_rules(snapshot.services.values(), snapshot.pods.values())
        if rules != self.last_rules:
            await asyncio.to_thread(network.apply_proxy_rules, snapshot.network, rules)
            self.last_rules = rules
        for worker in self.workers.values():
            record = snapshot.pods.get(key(worker.pod.namespace, worker.pod.name))
            if record is not None and record.netns and (network.NETNS_ETC / record.netns).is_dir():
                hosts, resolv = self._etc_files(record)
                network.write_netns_etc(record.netns, hosts=hosts, resolv_conf=resolv)
        objects = registry_objects(
            snapshot.namespaces.values(),
            snapshot.services.values(),
            snapshot.pods.values(),
            snapshot.network,
            policies=[
                *snapshot.peerauthentications.values(),
                *snapshot.virtualservices.values(),
                *snapshot.destinationrules.values(),
                *snapshot.gateways.values(),
                *snapshot.authorizationpolicies.values(),
                *snapshot.requestauthentications.values(),
                *snapshot.serviceentries.values(),
                *snapshot.sidecars.values(),
                *snapshot.telemetries.values(),
                *gateway_credentials(snapshot.gateways.values(), snapshot.secrets.values()),
            ],
        )
        text = yaml.dump_all(objects, Dumper=yaml.CSafeDumper, sort_keys=False)
        if text != self.last_registry:
            self.paths.registry.mkdir(mode=0o755, parents=True, exist_ok=True)
            write_atomically(self.paths.registry_file, text.encode(), 0o644)
            self.last_registry = text
        write_targets(self.paths, snapshot.pods.values())  # `sidemesh local prometheus`
        await self._apply_host_ports(snapshot)

    async def _apply_host_ports(self, snapshot: State) -> None:
        """NodePort/LoadBalancer Services on the host's loopback (`services.host_ports`)."""
        if self.host_ports is None:
            return
        wanted, problems = host_ports(snapshot.services.values())
        for problem in problems:
            if problem not in self.host_port_problems:
                log.warning("%s", problem)
        self.host_port_problems = set(problems)
        await self.host_ports.apply({
            (p.address, p.port): ((p.cluster_ip, p.service_port), p.service) for p in wanted
        })  # fmt: skip


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    return socket.create_connection((host, port), timeout=timeout)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m sidemesh.local.daemon STATE_DIR", file=sys.stderr)
        return 2
    paths = RuntimePaths(Path(argv[1]))
    lock = os.open(paths.daemon_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another daemon serves this state directory
    os.umask(0o022)
    paths.daemon_pid.write_text(f"{os.getpid()}\n", encoding="ascii")
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    store = Store(paths.root)
    state = store.read()
    network.ensure_node(state.network)
    network.refuse_pod_range_on_host(state.network)  # from the host's namespace, as ensure_node
    host_netns = Namespace.current()  # held open: host ports listen there (node_ports)
    if threading.active_count() != 1:  # setns must happen before any thread exists
        raise RuntimeError("the daemon must enter the node namespace before starting threads")
    enter_netns(state.network.node_netns)
    pki = LocalPki(paths.root)
    pki.ensure()
    # Not asyncio.run: that would cancel the pod workers on the way out, and their cleanup
    # would tear the pods down; a stopped daemon leaves them to `down` or the next daemon.
    loop = asyncio.new_event_loop()
    daemon = Daemon(paths, store, pki)
    daemon.host_ports = HostPortRelays(host_netns, Namespace.named(state.network.node_netns))
    loop.run_until_complete(daemon.run())
    log.info("local runtime daemon stopped")
    logging.shutdown()
    os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
