"""Helpers for benchmarking the injection webhook over real HTTPS (used by benchmarks/webhook.py).

* `start_webhook()` runs `sidemesh discovery` (or the same server with a fake admitter) in a
  subprocess on a free 127.0.0.1 port, with a self-signed certificate made here.
* `start_floor()` runs the floor: the same stack (uvicorn + httptools + uvloop + the same TLS
  context) with a trivial app that reads the body and returns a canned AdmissionReview. The gap
  between the floor and the webhook is what our code costs.
* `run_load()` drives a server from its own process (the machine has two cores: one for the
  server, one for the client): N keep-alive HTTPS connections posting one body for D seconds,
  with a minimal HTTP/1.1 client on raw asyncio streams so the client costs as little as it can.
  Each request gets a uid of its own, as from the API server, and the answer must echo it.

`python benchmarks/webhook_server.py` prints one JSON line comparing the floor with the
webhook running a fake admitter. The same file is the entry point of the subprocesses
(`serve-floor`, `serve-fake`, `load`).
"""

from __future__ import annotations

import asyncio
import datetime
import http.client
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SCRIPT = Path(__file__).resolve()
LOCALHOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 20.0
MAX_LOAD_SECONDS = 120.0


# --- certificates and processes ---------------------------------------------------------------


def write_self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed serving pair for localhost/127.0.0.1; the certificate is its own CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOCALHOST))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "tls.crt", directory / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOCALHOST, 0))
        port: int = probe.getsockname()[1]
        return port


def client_context(ca_file: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    context.set_alpn_protocols(["http/1.1"])
    return context


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    ca_file: Path

    def stop(self) -> int:
        """SIGTERM, then wait (bounded); returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def start_webhook(
    directory: Path,
    *,
    admitter: Literal["engine", "fake"] = "engine",
    extra_args: tuple[str, ...] = (),
) -> ServerProcess:
    """`sidemesh discovery` (admitter="engine") or the webhook app with a fake admitter."""
    cert_file, key_file = write_self_signed(directory)
    port = free_port()
    if admitter == "engine":
        command = [
            sys.executable, "-c", "from sidemesh.cli.main import main; main()", "discovery",
            "--host", LOCALHOST, "--port", str(port),
            "--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file), *extra_args,
        ]  # fmt: skip
    else:
        command = [sys.executable, str(SCRIPT), "serve-fake", str(port), str(cert_file),
                   str(key_file)]  # fmt: skip
    return _start(command, port, cert_file)


def start_floor(directory: Path) -> ServerProcess:
    cert_file, key_file = write_self_signed(directory)
    port = free_port()
    command = [sys.executable, str(SCRIPT), "serve-floor", str(port), str(cert_file), str(key_file)]
    return _start(command, port, cert_file)


def _start(command: list[str], port: int, ca_file: Path) -> ServerProcess:
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    server = ServerProcess(process, port, ca_file)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before it was ready")
        connection = http.client.HTTPSConnection(
            LOCALHOST, port, timeout=2, context=client_context(ca_file)
        )
        try:
            connection.request("GET", "/ready")
            if connection.getresponse().status == 200:
                return server
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"server on port {port} not ready after {START_TIMEOUT_SECONDS} s")


# --- request bodies ------------------------------------------------------------------------------


def sample_review(*, api_version: str = "admission.k8s.io/v1", env_vars: int = 5) -> bytes:
    """A realistic AdmissionReview for a Deployment's pod (one app container)."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "reviews-v1-5b6d7c8f9-",
            "namespace": "bookinfo",
            "labels": {"app": "reviews", "version": "v1", "pod-template-hash": "5b6d7c8f9"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2024-05-01T10:00:00Z"},
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "reviews-v1-5b6d7c8f9",
                 "uid": "8d1f2e3a-0000-4000-8000-000000000001", "controller": True,
                 "blockOwnerDeletion": True},
            ],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
                               "apiVersion": "v1", "fieldsType": "FieldsV1",
                               "fieldsV1": {"f:metadata": {"f:labels": {".": {}}}}}],
        },
        "spec": {
            "serviceAccountName": "bookinfo-reviews",
            "containers": [
                {
                    "name": "reviews",
                    "image": "docker.io/istio/examples-bookinfo-reviews-v1:1.20.1",
                    "ports": [{"containerPort": 9080, "protocol": "TCP"}],
                    "env": [{"name": f"VAR_{i}", "value": f"value-{i}"} for i in range(env_vars)],
                    "readinessProbe": {"httpGet": {"path": "/health", "port": 9080},
                                       "periodSeconds": 10},
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
            "restartPolicy": "Always",
            "dnsPolicy": "ClusterFirst",
        },
    }  # fmt: skip
    review = {
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "request": {
            "uid": "0df28fbd-5f5f-11e8-bc74-36e6bb280816",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "bookinfo",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "dryRun": False,
        },
    }
    return orjson.dumps(review)


class FakeAdmitter:
    """Injects a canned ~6 KB patch without looking at the pod: the webhook's own cost only."""

    revision = "default"

    def __init__(self) -> None:
        from sidemesh.inject.outcome import Outcome

        operations = [
            {"op": "add", "path": f"/spec/containers/-/env/{i}", "value": {"name": f"E{i}",
                                                                           "value": "x" * 40}}
            for i in range(60)
        ]  # fmt: skip
        self._outcome = Outcome(
            kind="injected", code="injected", reason="injected", revision="default",
            patch=orjson.dumps(operations),
        )  # fmt: skip

    def admit(self, pod: dict[str, Any], namespace: str, **_params: Any) -> Any:
        return self._outcome


# --- subprocess entry points -----------------------------------------------------------------


def _serve_fake(port: int, cert_file: Path, key_file: Path) -> None:
    from sidemesh.webhook.app import WebhookApp
    from sidemesh.webhook.server import serve_https

    app = WebhookApp(FakeAdmitter())
    serve_https(app, host=LOCALHOST, port=port, cert_file=cert_file, key_file=key_file)


def _serve_floor(port: int, cert_file: Path, key_file: Path) -> None:
    from sidemesh.webhook.admission import review
    from sidemesh.webhook.server import serve_https

    canned = review(sample_review(), FakeAdmitter()).body
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(canned))]

    async def floor(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more_body = True
        while more_body:
            message = await receive()
            more_body = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": canned})

    serve_https(floor, host=LOCALHOST, port=port, cert_file=cert_file, key_file=key_file)


# --- load generator ------------------------------------------------------------------------------


def run_load(
    port: int,
    body: bytes,
    *,
    ca_file: Path,
    path: str = "/inject",
    connections: int = 16,
    duration: float = 5.0,
    max_requests: int = 2_000_000,
    echo_uid: bool = True,
    vary: str = "",
) -> dict[str, Any]:
    """Load a 127.0.0.1 server from a separate process; returns rps, p50/p99 ms, errors."""
    if not 0 < duration <= MAX_LOAD_SECONDS or not 0 < connections <= 256:
        raise ValueError("duration must be in (0, 120] s and connections in (0, 256]")
    with tempfile.NamedTemporaryFile(suffix=".json") as body_file:
        body_file.write(body)
        body_file.flush()
        job = {
            "port": port,
            "ca_file": str(ca_file),
            "path": path,
            "body_file": body_file.name,
            "connections": connections,
            "duration": duration,
            "max_requests": max_requests,
            "echo_uid": echo_uid,
            "vary": vary,
        }
        completed = subprocess.run(
            [sys.executable, str(SCRIPT), "load", json.dumps(job)],
            capture_output=True, check=True, timeout=duration + 60,
        )  # fmt: skip
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


class _Load:
    def __init__(self, job: dict[str, Any]) -> None:
        self.port: int = job["port"]
        self.context = client_context(Path(job["ca_file"]))
        body = Path(job["body_file"]).read_bytes()
        request = (
            f"POST {job['path']} HTTP/1.1\r\nHost: localhost:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        # Like the API server, give every request a uid of its own: the last 12 hex digits of
        # the body's request uid become a counter (same length, so Content-Length holds).
        uid_at = request.find(b'"uid":"') + len(b'"uid":"')
        uid = request[uid_at : request.index(b'"', uid_at)]
        if len(uid) != 36:
            raise ValueError("the body's first uid must be a 36-character UUID")
        self.head, self.tail = request[: uid_at + 24], request[uid_at + 36 :]
        # With `vary`, every occurrence of that string in the body after the uid takes the
        # serial too, in hex of the same width: each request is then a different pod.
        vary = job["vary"].encode()
        self.vary_width = len(vary)
        self.tail_parts = self.tail.split(vary) if vary else [self.tail]
        self.serial = 0
        self.echo_uid: bool = job["echo_uid"]  # the floor's canned answer echoes nothing
        self.connections: int = job["connections"]
        self.duration: float = job["duration"]
        self.remaining: int = job["max_requests"]
        self.latencies: list[float] = []
        self.errors = 0

    async def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        deadline = started + self.duration
        async with asyncio.timeout(self.duration + 30):  # bound a hung server
            await asyncio.gather(*(self._connection(deadline) for _ in range(self.connections)))
        elapsed = time.perf_counter() - started
        latencies = sorted(self.latencies)

        def percentile(q: float) -> float:
            return round(latencies[int(q * (len(latencies) - 1))] * 1000, 3) if latencies else 0.0

        return {"requests": len(latencies), "rps": round(len(latencies) / elapsed, 1),
                "p50_ms": percentile(0.50), "p99_ms": percentile(0.99), "errors": self.errors,
                "connections": self.connections, "seconds": round(elapsed, 2)}  # fmt: skip

    async def _connection(self, deadline: float) -> None:
        while time.perf_counter() < deadline and self.remaining > 0:
            try:
                reader, writer = await asyncio.open_connection(
                    LOCALHOST, self.port, ssl=self.context, server_hostname="localhost"
                )
            except OSError:
                self.errors += 1
                await asyncio.sleep(0.05)
                continue
            try:
                await self._requests(reader, writer, deadline)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                self.errors += 1
            finally:
                writer.close()

    async def _requests(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, deadline: float
    ) -> None:
        clock = time.perf_counter
        while clock() < deadline and self.remaining > 0:
            self.remaining -= 1
            self.serial += 1
            serial = b"%012x" % self.serial
            sent = clock()
            varied = b"%0*x" % (self.vary_width, self.serial % 16**self.vary_width)
            writer.write(self.head + serial + varied.join(self.tail_parts))
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            close = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and b"close" in value.lower():
                    close = True
            answer = await reader.readexactly(length)
            self.latencies.append(clock() - sent)
            if status != 200 or (self.echo_uid and serial not in answer):
                self.errors += 1
            if close:
                return


def _load_main(job_json: str) -> None:
    import uvloop

    result = uvloop.run(_Load(json.loads(job_json)).run())
    print(json.dumps(result))


# --- demo ----------------------------------------------------------------------------------------


def _in_process_ratio(rounds: int = 2000) -> dict[str, float]:
    """Full handling (`review`) against an orjson decode + encode of the same request/response."""
    from sidemesh.webhook.admission import review

    body = sample_review()
    admitter = FakeAdmitter()
    response = review(body, admitter).body

    def best_of(action: Any) -> float:
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(rounds):
                action()
            timings.append((time.perf_counter() - started) / rounds)
        return min(timings)

    handling = best_of(lambda: review(body, admitter))
    floor = best_of(
        lambda: (orjson.dumps(orjson.loads(body)), orjson.dumps(orjson.loads(response)))
    )
    return {"review_us": round(handling * 1e6, 2), "orjson_floor_us": round(floor * 1e6, 2),
            "ratio": round(handling / floor, 2)}  # fmt: skip


def main() -> None:
    """Floor vs fake admitter, alternating rounds (the machine is noisy); best round of each."""
    duration = float(os.environ.get("SIDEMESH_BENCH_SECONDS", "2"))
    rounds = int(os.environ.get("SIDEMESH_BENCH_ROUNDS", "2"))
    body = sample_review()
    figures: dict[str, Any] = {"benchmark": "webhook_server_demo", "body_bytes": len(body)}
    best: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as directory:
        floor_dir, fake_dir = Path(directory, "floor"), Path(directory, "fake")
        floor_dir.mkdir()
        fake_dir.mkdir()
        with start_floor(floor_dir) as floor, start_webhook(fake_dir, admitter="fake") as fake:
            for _ in range(rounds):
                for name, server in (("floor", floor), ("fake_admitter", fake)):
                    result = run_load(
                        server.port, body, ca_file=server.ca_file, duration=duration,
                        echo_uid=name != "floor",
                    )  # fmt: skip
                    if name not in best or result["rps"] > best[name]["rps"]:
                        best[name] = result
    figures.update(best)
    if best["floor"]["rps"]:
        figures["rps_vs_floor"] = round(best["fake_admitter"]["rps"] / best["floor"]["rps"], 3)
    figures["in_process"] = _in_process_ratio()
    print(json.dumps(figures))


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] in ("serve-fake", "serve-floor"):
        serve = _serve_fake if sys.argv[1] == "serve-fake" else _serve_floor
        serve(int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
    elif len(sys.argv) == 3 and sys.argv[1] == "load":
        _load_main(sys.argv[2])
    else:
        main()
