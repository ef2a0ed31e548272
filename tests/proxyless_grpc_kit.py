"""Proxyless gRPC in tests: real grpcio servers that say who they are, our ADS server on a
loopback port, and a real grpcio xDS client run in a child process (grpcio's xDS client is
one per process and reads `GRPC_XDS_BOOTSTRAP` once, so each client gets a fresh process).

Shared by `tests/xds/test_grpc_gen_grpcio.py` and `tests/sidecar/test_proxyless_grpc*.py`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from proxyless_grpc_server import who_answer
from sidemesh.xds.ads import AdsServer
from sidemesh.xds.model import MeshSnapshot

CLIENT = Path(__file__).with_name("proxyless_grpc_client.py")
SERVER = Path(__file__).with_name("proxyless_grpc_server.py")
SIDEMESH = [sys.executable, "-c", "from sidemesh.cli.main import main; main()"]
SERVICE = "sidemesh.test.Who"
METHOD = f"/{SERVICE}/Am"


def who_handler(name: str) -> grpc.GenericRpcHandler:
    """A unary method answering the server's name (raw bytes, no protobuf needed), and over
    mTLS also the SPIFFE identity the caller's certificate proved (`name caller-uri`)."""

    async def answer(request: bytes, context: Any) -> bytes:
        return who_answer(name, context)

    method = grpc.unary_unary_rpc_method_handler(answer)
    return grpc.method_handlers_generic_handler(SERVICE, {"Am": method})


@asynccontextmanager
async def who_server(
    name: str,
    credentials: grpc.ServerCredentials | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
) -> AsyncIterator[int]:
    """A grpcio server on `host` answering `name`; yields its port."""
    server = aio.server()
    server.add_generic_rpc_handlers((who_handler(name),))
    address = f"{host}:{port}"
    bound = (server.add_insecure_port(address) if credentials is None
             else server.add_secure_port(address, credentials))  # fmt: skip
    await server.start()
    try:
        yield bound
    finally:
        await server.stop(None)


@asynccontextmanager
async def ads_server(snapshot: MeshSnapshot) -> AsyncIterator[tuple[AdsServer, int]]:
    """Our ADS, plaintext on a loopback port (what `--xds-port 15010` serves)."""
    ads = AdsServer(snapshot, instance_id="grpc-test")
    server = aio.server()
    server.add_generic_rpc_handlers((ads.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield ads, port
    finally:
        await server.stop(None)


async def call_through_xds(
    bootstrap: Path,
    target: str,
    *,
    calls: int = 1,
    xds_credentials: bool = False,
    until: str = "",
    timeout: float = 60.0,
) -> list[str]:
    """Run a grpcio client on `xds:///target`; the servers' answers, in order. With `until`,
    the client keeps calling until one answer is that (then makes `calls` more)."""
    args = [sys.executable, str(CLIENT), target, str(calls), until,
            "xds" if xds_credentials else "insecure"]  # fmt: skip
    env = {**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap),
           "GRPC_ENABLE_FORK_SUPPORT": "false"}  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
        raise AssertionError(f"gRPC client timed out:\n{err.decode()[-3000:]}") from None
    if process.returncode != 0:
        raise AssertionError(f"gRPC client failed ({process.returncode}):\n{err.decode()[-3000:]}")
    answers: list[str] = json.loads(out)
    return answers


def start_agent_without_envoy(
    workdir: Path,
    *,
    ca_address: str,
    token: str,
    root_pem: bytes,
    status_port: int,
    namespace: str,
    service_account: str,
    pod_name: str,
    labels: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """The `grpc-agent` template's istio-proxy as a plain process: the agent with
    DISABLE_ENVOY=true, its pod's files under `workdir` (certificates and bootstrap in
    `workdir/data`), logging to `workdir/agent.log`."""
    (workdir / "pod").mkdir(parents=True)
    (workdir / "pod" / "labels").write_text(
        "".join(f'{key}="{value}"\n' for key, value in (labels or {}).items())
    )
    (workdir / "pod" / "annotations").write_text("")
    (workdir / "token").write_text(token)
    (workdir / "root-cert.pem").write_bytes(root_pem)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "POD_NAME": pod_name, "POD_NAMESPACE": namespace, "SERVICE_ACCOUNT": service_account,
        "INSTANCE_IP": "127.0.0.1", "CA_ADDR": ca_address, "TRUST_DOMAIN": "cluster.local",
        "DISABLE_ENVOY": "true", "OUTPUT_CERTS": str(workdir / "data"),
        "ISTIO_META_GENERATOR": "grpc",
    }  # fmt: skip
    command = [
        *SIDEMESH, "agent", "proxy", "sidecar", "--domain", f"{namespace}.svc.cluster.local",
        "--status-port", str(status_port), "--status-host", "127.0.0.1",
        "--token-path", str(workdir / "token"), "--root-cert", str(workdir / "root-cert.pem"),
        "--podinfo-dir", str(workdir / "pod"), "--config-dir", str(workdir / "proxy"),
    ]  # fmt: skip
    with (workdir / "agent.log").open("wb") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def start_xds_server(bootstrap: Path, name: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    """An xDS-enabled grpcio server on 0.0.0.0:`port` (`proxyless_grpc_server.py`): it serves
    once the discovery sent its listener; stop it with `terminate()`."""
    env = {**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap),
           "GRPC_ENABLE_FORK_SUPPORT": "false"}  # fmt: skip
    with log.open("wb") as output:
        return subprocess.Popen([sys.executable, str(SERVER), name, str(port)], env=env,
                                stdout=output, stderr=subprocess.STDOUT)  # fmt: skip
