"""A one-node "cluster" of network namespaces running the whole sidecar for real.

Layout (everything lives in namespaces this kit creates; the host's own network is untouched):

    node netns  <prefix>-node   bridge br0 10.77.0.1/24, runs `sidemesh discovery` (istiod)
    pod netns   <prefix>-<pod>  eth0 10.77.0.N/24 (a veth whose peer is on br0), default
                                route via the node; /etc/netns/<ns>/hosts resolves
                                istiod.istio-system.svc to the node and services to their VIPs

Each pod is built the way the cluster would build it: a plain Pod manifest goes through the
real injector (`Injector().inject`), and this kit plays kubelet with the result: it runs the
`istio-init` container's args (`sidemesh iptables ...`) as root in the pod namespace, starts
the app (uid 4242), materialises the volumes the injector declared (token, root cert,
downward-API labels/annotations, emptyDirs), resolves the `istio-proxy` env (fieldRefs, the
CPU-limit resourceFieldRef, `$(VAR)` in args), and runs the agent with those args as the
container's `runAsUser`. The only additions are path flags that point the agent's Istio
default paths at the volume directories (the kit checks each default lies on a mounted
volume, so a drift between the injector's mounts and the agent's defaults fails loudly).

The test process reaches into namespaces from short-lived threads that `setns` first, so no
helper process is needed for an HTTP probe; the app's own requests run as processes inside
the pod namespace under the app uid, so capture applies to them. When those uids cannot read
the Python installation (a venv under a 0700 /root), they run with CAP_DAC_READ_SEARCH as
an ambient capability (see `sidecar_netns.unprivileged`): file access only, no networking.

Cleanup kills every process left in the kit's namespaces (`ip netns pids`), deletes the
namespaces, /etc/netns/<ns> and the work directory.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sidecar_kubelet import HTTP_PORT, NAMESPACE, TCP_PORT, pod_manifest
from sidecar_netns import Process, ProcessDied, http_request, run, wait_until
from sidecar_pod import READY_TIMEOUT, SIDEMESH, Pod

from sidemesh.api import names
from sidemesh.inject.engine import Injector
from sidemesh.security.authn import issue_local_token

NODE_IP = "10.77.0.1"
PREFIX_LENGTH = 24
NODE_NAME = "node-1"
ISTIOD_HOST = "istiod.istio-system.svc"
_kits = itertools.count()


def real_host_kit() -> MeshKit:
    """A new MeshKit, or the calling test skipped with the reason this host cannot run it."""
    reason = missing_requirement()
    if reason is not None:
        pytest.skip(f"whole-sidecar test needs a real host: {reason}")
    return MeshKit()


def missing_requirement() -> str | None:
    """Why these tests cannot run here, or None."""
    if sys.platform != "linux":
        return "network namespaces are Linux-only"
    if os.geteuid() != 0:
        return "needs root: creates network namespaces, iptables rules and uid-1337 processes"
    for tool in ("ip", "iptables-restore", "iptables-save", "setpriv"):
        if shutil.which(tool) is None:
            return f"{tool} not found in PATH"
    try:
        from sidemesh.agent.envoy import find_envoy_binary

        find_envoy_binary()
    except (ImportError, FileNotFoundError) as exc:
        return f"no Envoy binary: {exc}"
    probe = subprocess.run(
        ["ip", "netns", "add", f"smprobe{os.getpid()}"], capture_output=True, text=True, timeout=10
    )
    if probe.returncode != 0:
        return f"cannot create network namespaces here: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", f"smprobe{os.getpid()}"], timeout=10, check=False)
    return None


def self_signed_certificate(directory: Path, host: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = directory / "webhook.crt", directory / "webhook.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))  # fmt: skip
    return cert_file, key_file


# --- the cluster ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceDef:
    name: str
    vip: str
    app: str  # selects pods with label app=<app>
    ports: tuple[tuple[str, int, int], ...]  # (port name, service port, target port)

    @property
    def hostname(self) -> str:
        return f"{self.name}.{NAMESPACE}.svc.cluster.local"


class MeshKit:
    """The node, its pods, the control plane; a context manager that cleans up everything."""

    def __init__(self) -> None:
        self.prefix = f"sct{os.getpid() % 100000}n{next(_kits)}"
        self.node = f"{self.prefix}-node"
        self.workdir = Path(tempfile.mkdtemp(prefix="smk-", dir="/tmp"))
        self.workdir.chmod(0o755)
        self.registry_dir = self.workdir / "registry"
        self.ca_dir = self.workdir / "ca"
        self.token_file = self.workdir / "tokens.yaml"
        self.injector = Injector()
        self.pods: dict[str, Pod] = {}
        self.services: list[ServiceDef] = []
        self.processes: list[Process] = []
        self.control_plane: Process | None = None
        self._namespaces: list[str] = []
        self._etc: list[Path] = []
        self._addresses = itertools.count(10)

    # lifecycle

    def __enter__(self) -> MeshKit:
        try:
            self._create_node()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        for process in reversed(self.processes):
            if process.alive():
                process.popen.kill()
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(10)
        for netns in reversed(self._namespaces):
            self._kill_everything_in(netns)
            run(["ip", "netns", "del", netns], check=False)
        for directory in self._etc:
            shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(self.workdir, ignore_errors=True)

    @staticmethod
    def _kill_everything_in(netns: str) -> None:
        """Anything still running in a namespace we created is ours (e.g. an Envoy whose
        agent was killed before PR_SET_PDEATHSIG could act)."""
        for _ in range(3):
            listed = run(["ip", "netns", "pids", netns], check=False).stdout.split()
            if not listed:
                return
            for pid in listed:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            time.sleep(0.2)

    def _add_netns(self, netns: str) -> None:
        run(["ip", "netns", "add", netns])
        self._namespaces.append(netns)
        run(["ip", "-n", netns, "link", "set", "lo", "up"])

    def _create_node(self) -> None:
        self._add_netns(self.node)
        for command in (
            "link add br0 type bridge",
            f"addr add {NODE_IP}/{PREFIX_LENGTH} dev br0",
            "link set br0 up",
        ):
            run(["ip", "-n", self.node, *command.split()])

    def spawn(self, name: str, netns: str, argv: list[str], *,
              env: Mapping[str, str] | None = None, stdout: bool = False) -> Process:  # fmt: skip
        """Start `argv` inside `netns`; stderr (and stdout unless kept apart) to a log file."""
        log = self.workdir / "logs" / f"{name}.{len(self.processes)}.log"
        log.parent.mkdir(exist_ok=True)
        with open(log, "wb") as err, open(log.with_suffix(".out"), "wb") as out:
            popen = subprocess.Popen(
                ["ip", "netns", "exec", netns, *argv],
                stdin=subprocess.DEVNULL, stdout=out if stdout else err, stderr=err,
                env=None if env is None else dict(env), cwd="/",
            )  # fmt: skip
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    # pods, services, policy

    def add_pod(self, name: str, *, app: str, service_account: str,
                annotations: Mapping[str, str] | None = None,
                manifest: dict[str, Any] | None = None) -> Pod:  # fmt: skip
        """Inject a pod, give it a network namespace wired to the node, and a token.
        `manifest` replaces the usual one-app pod (e.g. a gateway: only `istio-proxy`)."""
        index = next(self._addresses)
        ip = f"10.77.0.{index}"
        injected = self.injector.inject(
            manifest or pod_manifest(name, app=app, service_account=service_account,
                                     annotations=annotations),
            NAMESPACE,
        )  # fmt: skip
        injected["spec"]["nodeName"] = NODE_NAME
        injected["status"] = {"phase": "Running", "podIP": ip, "hostIP": NODE_IP,
                              "conditions": [{"type": "Ready", "status": "True"}]}  # fmt: skip
        netns = f"{self.prefix}-{name}"
        self._add_netns(netns)
        veth = f"v{self.prefix[-6:]}{index}"[-15:]
        for command in (
            ["-n", self.node, "link", "add", veth, "type", "veth", "peer", "name", "eth0",
             "netns", netns],
            ["-n", self.node, "link", "set", veth, "master", "br0", "up"],
            ["-n", netns, "addr", "add", f"{ip}/{PREFIX_LENGTH}", "dev", "eth0"],
            ["-n", netns, "link", "set", "eth0", "up"],
            ["-n", netns, "route", "add", "default", "via", NODE_IP],
        ):  # fmt: skip
            run(["ip", *command])
        self._write_etc(netns, ip, name)
        token = issue_local_token(
            self.token_file, namespace=NAMESPACE, service_account=service_account
        )
        directory = self.workdir / name
        directory.mkdir(mode=0o755)
        pod = Pod(self, name, netns, ip, injected, token, directory)
        self.pods[name] = pod
        return pod

    def _write_etc(self, netns: str, ip: str, hostname: str) -> None:
        """/etc/netns/<ns>/{hosts,resolv.conf}: what `ip netns exec` shows the pod's
        processes as /etc/hosts and /etc/resolv.conf (cluster DNS, played by a hosts file)."""
        directory = Path("/etc/netns") / netns
        directory.mkdir(parents=True, exist_ok=True)
        self._etc.append(directory)
        lines = ["127.0.0.1 localhost", f"{ip} {hostname}",
                 f"{NODE_IP} {ISTIOD_HOST} {ISTIOD_HOST}.cluster.local"]  # fmt: skip
        for service in self.services:
            short = f"{service.name}.{NAMESPACE}"
            lines.append(f"{service.vip} {service.hostname} {short}.svc {short}")
        (directory / "hosts").write_text("\n".join(lines) + "\n")
        (directory / "resolv.conf").write_text("nameserver 127.0.0.1\n")  # fail fast, stay local

    def add_service(self, service: ServiceDef) -> None:
        """Must come before the pods that should resolve its name."""
        self.services.append(service)

    def registry_objects(self) -> list[dict[str, Any]]:
        objects: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace",
                                          "metadata": {"name": NAMESPACE}}]  # fmt: skip
        for pod in self.pods.values():
            objects.append(pod.manifest)
        for service in self.services:
            objects.append({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": service.name, "namespace": NAMESPACE},
                "spec": {"clusterIP": service.vip, "selector": {"app": service.app},
                         "ports": [{"name": n, "port": p, "targetPort": t, "protocol": "TCP"}
                                   for n, p, t in service.ports]},
            })  # fmt: skip
            members = [p for p in self.pods.values() if p.labels.get("app") == service.app]
            objects.append({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": f"{service.name}-slice", "namespace": NAMESPACE,
                             "labels": {"kubernetes.io/service-name": service.name}},
                "addressType": "IPv4",
                "ports": [{"name": n, "port": t, "protocol": "TCP"} for n, _, t in service.ports],
                "endpoints": [{"addresses": [p.ip], "conditions": {"ready": True},
                               "targetRef": {"kind": "Pod", "name": p.name,
                                             "namespace": NAMESPACE}} for p in members],
            })  # fmt: skip
        return objects

    def write_registry(self) -> None:
        self.registry_dir.mkdir(exist_ok=True)
        write_yaml(self.registry_dir / "workloads.yaml", self.registry_objects())

    def set_peer_authentication(self, mode: str) -> None:
        """A namespace-wide PeerAuthentication (the file registry notices within ~1 s)."""
        policy = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                  "metadata": {"name": "default", "namespace": NAMESPACE},
                  "spec": {"mtls": {"mode": mode}}}  # fmt: skip
        write_yaml(self.registry_dir / "peer-authentication.yaml", [policy])

    # the control plane

    def start_control_plane(self) -> Process:
        """`sidemesh discovery` in the node namespace, from the registry files."""
        self.write_registry()
        cert, key = self_signed_certificate(self.workdir, "istiod.istio-system.svc")
        argv = [*SIDEMESH, "discovery", "--host", "0.0.0.0",
                "--port", str(names.PORT_WEBHOOK),
                "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                "--registry-file", str(self.registry_dir), "--ca-dir", str(self.ca_dir),
                "--token-file", str(self.token_file),
                "--xds-port", str(names.PORT_XDS_PLAINTEXT),
                "--xds-tls-port", str(names.PORT_XDS_TLS),
                "--monitoring-port", str(names.PORT_MONITORING)]  # fmt: skip
        self.control_plane = self.spawn("discovery", self.node, argv)

        def ready() -> bool:
            if self.control_plane is not None and not self.control_plane.alive():
                raise ProcessDied(f"discovery exited: {self.control_plane.output()}")
            return http_request(self.node, NODE_IP, names.PORT_MONITORING, "/ready").status == 200

        wait_until(ready, timeout=READY_TIMEOUT, what="control plane ready")
        return self.control_plane

    def root_cert(self) -> bytes:
        return (self.ca_dir / "root-cert.pem").read_bytes()

    def proxy_status(self) -> list[dict[str, Any]]:
        # From the control plane's own host, on loopback: /debug/* needs no token there.
        reply = http_request(self.node, "127.0.0.1", names.PORT_MONITORING, "/debug/syncz")
        rows: list[dict[str, Any]] = json.loads(reply.body)
        return rows

    def logs(self) -> str:
        """Every process's log tail, for assertion messages."""
        return "\n".join(f"--- {p.name} ---\n{p.output(3000)}" for p in self.processes)


def write_yaml(path: Path, documents: Iterable[Any]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")  # hidden, and not *.yaml: never half-read
    temporary.write_text(yaml.safe_dump_all(list(documents), sort_keys=False))
    os.replace(temporary, path)


# --- the usual cast ---------------------------------------------------------------------------

BACKEND = ServiceDef(
    name="backend", vip="10.96.0.10", app="backend",
    ports=(("http", 80, HTTP_PORT), ("tcp-echo", 9000, TCP_PORT)),
)  # fmt: skip


def backend_url(path: str = "/", *, port: int = 80) -> str:
    return f"http://{BACKEND.hostname}:{port}{path}"


def start_pods(*pods: Pod) -> None:
    """Start several pods (capture, app, agent each), then wait until all are ready."""
    for pod in pods:
        pod.apply_capture()
        pod.start_app()
        pod.start_agent()
    for pod in pods:
        pod.wait_ready()


def client_and_backend(
    kit: MeshKit,
    *,
    client_annotations: Mapping[str, str] | None = None,
    backend_annotations: Mapping[str, str] | None = None,
) -> tuple[Pod, Pod]:
    """The usual two-pod mesh, running: client-0 (sa client) and backend-0 (sa backend),
    the `backend` service (VIP 10.96.0.10, http 80 → 8080, tcp-echo 9000 → 9090)."""
    kit.add_service(BACKEND)
    client = kit.add_pod("client-0", app="client", service_account="client",
                         annotations=client_annotations)  # fmt: skip
    backend = kit.add_pod("backend-0", app="backend", service_account="backend",
                          annotations=backend_annotations)  # fmt: skip
    kit.start_control_plane()
    start_pods(backend, client)
    return client, backend
