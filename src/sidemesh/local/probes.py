"""Container probes and lifecycle hooks, executed as the kubelet executes them.

httpGet and tcpSocket connect from the node's network namespace to the pod's address (the
daemon lives there), so the packets arrive from outside the pod, exactly as a kubelet's do,
and meet the pod's iptables capture the same way. httpGet succeeds on 200-399. exec runs the
command inside the container (its namespaces, mounts, uid) and succeeds on exit status 0.
grpc is checked as a TCP connect (the gRPC health protocol needs HTTP/2; documented gap).
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

ExecRunner = Callable[[list[str], float], Awaitable[int]]  # argv, timeout -> exit status


@dataclass(frozen=True)
class ProbeSettings:
    initial_delay: float
    period: float
    timeout: float
    success_threshold: int
    failure_threshold: int

    @classmethod
    def of(cls, probe: Mapping[str, Any], *, kind: str) -> ProbeSettings:
        return cls(
            initial_delay=float(probe.get("initialDelaySeconds") or 0),
            period=float(probe.get("periodSeconds") or 10),
            timeout=float(probe.get("timeoutSeconds") or 1),
            # liveness and startup probes must have successThreshold 1
            success_threshold=1 if kind != "readiness" else int(probe.get("successThreshold") or 1),
            failure_threshold=int(probe.get("failureThreshold") or 3),
        )


def resolve_port(port: Any, container: Mapping[str, Any]) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise ValueError(f"port {port!r} is not a named port of the container")


async def http_get(
    handler: Mapping[str, Any], container: Mapping[str, Any], pod_ip: str, timeout: float
) -> tuple[bool, str]:
    host = str(handler.get("host") or pod_ip)
    port = resolve_port(handler.get("port"), container)
    path = str(handler.get("path") or "/")
    context = None
    if str(handler.get("scheme") or "HTTP").upper() == "HTTPS":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the kubelet does not verify probe certificates
    headers = {"Host": f"{host}:{port}", "User-Agent": "kube-probe/1.33", "Accept": "*/*"}
    for header in handler.get("httpHeaders") or []:
        headers[str(header.get("name"))] = str(header.get("value"))
    request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request += "Connection: close\r\n\r\n"

    async def exchange() -> tuple[bool, str]:
        reader, writer = await asyncio.open_connection(host, port, ssl=context)
        try:
            writer.write(request.encode())
            await writer.drain()
            status_line = (await reader.readline()).decode(errors="replace").strip()
        finally:
            writer.close()
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            return False, f"malformed HTTP response {status_line!r}"
        code = int(parts[1])
        return 200 <= code < 400, f"HTTP probe failed with statuscode: {code}"

    try:
        return await asyncio.wait_for(exchange(), timeout)
    except (OSError, TimeoutError, ssl.SSLError, ValueError) as exc:
        return False, f'Get "http://{host}:{port}{path}": {_describe(exc)}'


async def tcp_connect(host: str, port: int, timeout: float) -> tuple[bool, str]:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as exc:
        return False, f"dial tcp {host}:{port}: {_describe(exc)}"
    writer.close()
    return True, ""


async def run_handler(
    handler: Mapping[str, Any],
    container: Mapping[str, Any],
    *,
    pod_ip: str,
    timeout: float,
    run_exec: ExecRunner,
) -> tuple[bool, str]:
    """One probe (or hook) attempt: (succeeded, why not)."""
    try:
        if "httpGet" in handler:
            return await http_get(handler["httpGet"] or {}, container, pod_ip, timeout)
        if "tcpSocket" in handler:
            spec = handler["tcpSocket"] or {}
            port = resolve_port(spec.get("port"), container)
            return await tcp_connect(str(spec.get("host") or pod_ip), port, timeout)
        if "grpc" in handler:
            return await tcp_connect(pod_ip, int((handler["grpc"] or {}).get("port") or 0), timeout)
        if "exec" in handler:
            command = [str(c) for c in (handler["exec"] or {}).get("command") or []]
            status = await run_exec(command, timeout)
            return status == 0, f"command {command} exited with {status}"
        if "sleep" in handler:
            await asyncio.sleep(float((handler["sleep"] or {}).get("seconds") or 0))
            return True, ""
    except ValueError as exc:
        return False, str(exc)
    return False, f"unsupported handler {sorted(handler)}"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "context deadline exceeded"
    if isinstance(exc, OSError) and exc.errno:
        return f"connect: {os.strerror(exc.errno).lower()}"
    return str(exc) or type(exc).__name__
