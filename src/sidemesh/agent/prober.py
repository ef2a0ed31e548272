"""Runs the app's original probes from inside the pod, as the kubelet would have.

* HTTP(S): GET with the probe's headers; 2xx and 3xx succeed (redirects are not followed).
  HTTPS does not verify the certificate, exactly like the kubelet.
* TCP: the connection opens.
* gRPC: `grpc.health.v1.Health/Check` (grpcio-health-checking's stub) answers SERVING;
  grpcio is loaded on the first gRPC probe only.

Each probe is bounded by its own `timeoutSeconds` (default 1 s). The target is the probe's
`host` if it set one, else the pod IP (where the kubelet would have sent it), configurable
for tests and the local runtime.

HTTP and TCP probes of the pod's own address leave from 127.0.0.6 (::6 for IPv6), as Istio's
agent's do: capture returns that loopback source untouched (`-o lo -s 127.0.0.6/32 -j
RETURN`), so the probe reaches the app itself. From any other source the proxy uid's
connection to its own pod IP is redirected into Envoy's inbound listener, where STRICT mTLS
refuses it (and a port no service declares loops back through the passthrough cluster).
gRPC probes cannot choose their source address (grpcio has no such option) and keep the
old path.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from sidemesh.agent import http
from sidemesh.agent.metrics import AgentMetrics
from sidemesh.agent.probes import AppProbe, GrpcProbe, HttpProbe, TcpProbe

_PROBE_BODY_LIMIT: Final = 10 * 1024  # the kubelet reads no more than this either
_PROBE_USER_AGENT: Final = "kube-probe/sidemesh"
PROBE_SOURCE_IPV4: Final = "127.0.0.6"
PROBE_SOURCE_IPV6: Final = "::6"


@dataclass(frozen=True)
class ProbeResult:
    success: bool
    detail: str


def _insecure_tls() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _target(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@functools.cache
def _can_bind(address: str) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
    except OSError:  # e.g. ::6 not on lo (no IPv6 capture), or no such loopback address
        return False
    return True


def probe_source(host: str, default_host: str) -> str | None:
    """The source address for a probe of `host`: the passthrough address when probing the
    pod's own address (and the kernel lets us use it), else None (the kernel's choice)."""
    if host != default_host:
        return None
    source = PROBE_SOURCE_IPV6 if ":" in host else PROBE_SOURCE_IPV4
    return source if _can_bind(source) else None


async def _probe_http(
    action: HttpProbe, host: str, timeout: float, source: str | None
) -> ProbeResult:
    headers = [("User-Agent", _PROBE_USER_AGENT), ("Accept", "*/*")]
    overridden = {name.lower() for name, _ in action.headers}
    headers = [(n, v) for n, v in headers if n.lower() not in overridden] + list(action.headers)
    try:
        response = await http.fetch(
            host,
            action.port,
            action.path,
            headers=headers,
            timeout=timeout,
            tls=_insecure_tls() if action.scheme == "HTTPS" else None,
            max_body=_PROBE_BODY_LIMIT,
            local_address=source,
        )
    except http.HttpError as exc:
        return ProbeResult(False, str(exc))
    success = 200 <= response.status < 400
    return ProbeResult(success, f"HTTP {response.status}")


async def _probe_tcp(
    action: TcpProbe, host: str, timeout: float, source: str | None
) -> ProbeResult:
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(
                host, action.port, local_addr=(source, 0) if source is not None else None
            )
    except TimeoutError:
        return ProbeResult(
            False, f"{_target(host, action.port)}: no connection within {timeout:g}s"
        )
    except OSError as exc:
        return ProbeResult(False, f"{_target(host, action.port)}: {exc.strerror or exc}")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return ProbeResult(True, "connected")


async def _probe_grpc(action: GrpcProbe, host: str, timeout: float) -> ProbeResult:
    # Imported on the first gRPC probe: a pod without one never loads grpcio into the agent.
    import grpc  # type: ignore[import-untyped, unused-ignore]
    from grpc_health.v1 import health_pb2  # type: ignore[import-untyped, unused-ignore]
    from grpc_health.v1.health_pb2_grpc import (  # type: ignore[import-untyped, unused-ignore]
        HealthStub,
    )

    target = _target(host, action.port)
    async with grpc.aio.insecure_channel(target) as channel:
        request = health_pb2.HealthCheckRequest(service=action.service)
        try:
            reply = await HealthStub(channel).Check(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return ProbeResult(False, f"{target}: {exc.code().name}: {exc.details()}")
    status: int = reply.status
    names = health_pb2.HealthCheckResponse.ServingStatus
    name = names.Name(status) if status in names.values() else str(status)
    return ProbeResult(status == health_pb2.HealthCheckResponse.SERVING, f"grpc health {name}")


async def run_probe(probe: AppProbe, *, default_host: str) -> ProbeResult:
    action = probe.action
    host = action.host if isinstance(action, HttpProbe | TcpProbe) and action.host else None
    host = host or default_host
    source = probe_source(host, default_host)
    try:
        # Each kind honours the timeout itself; this only bounds a stuck close or handshake.
        async with asyncio.timeout(probe.timeout + 1.0):
            if isinstance(action, HttpProbe):
                return await _probe_http(action, host, probe.timeout, source)
            if isinstance(action, TcpProbe):
                return await _probe_tcp(action, host, probe.timeout, source)
            return await _probe_grpc(action, host, probe.timeout)
    except TimeoutError:
        return ProbeResult(False, f"no answer within {probe.timeout:g}s")


class Prober:
    """The probes by status-server path, run on demand (each kubelet probe runs one)."""

    def __init__(
        self, probes: Mapping[str, AppProbe], *, default_host: str, metrics: AgentMetrics
    ) -> None:
        self._probes = probes
        self._default_host = default_host
        self._metrics = metrics

    def knows(self, path: str) -> bool:
        return path in self._probes

    async def check(self, path: str) -> ProbeResult:
        result = await run_probe(self._probes[path], default_host=self._default_host)
        self._metrics.record_probe(path, success=result.success)
        return result
