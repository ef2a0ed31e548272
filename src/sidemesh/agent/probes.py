"""The app probes the injector moved into ISTIO_KUBE_APP_PROBERS, as typed values (pure).

The env holds a JSON map `/app-health/<container>/<readyz|livez|startupz>` → the original
Kubernetes probe (`httpGet`, `tcpSocket` or `grpc`, plus `timeoutSeconds`). Named ports were
resolved to numbers by the injector; one that was not is reported here, at startup, rather than
as a probe that can never pass.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

APP_HEALTH_PREFIX: Final = "/app-health/"
DEFAULT_TIMEOUT_SECONDS: Final = 1.0


class ProbeConfigError(ValueError):
    """ISTIO_KUBE_APP_PROBERS cannot be used; the message names the entry and the problem."""


@dataclass(frozen=True)
class HttpProbe:
    port: int
    path: str = "/"
    scheme: Literal["HTTP", "HTTPS"] = "HTTP"
    host: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class TcpProbe:
    port: int
    host: str | None = None


@dataclass(frozen=True)
class GrpcProbe:
    port: int
    service: str = ""


@dataclass(frozen=True)
class AppProbe:
    action: HttpProbe | TcpProbe | GrpcProbe
    timeout: float = DEFAULT_TIMEOUT_SECONDS


def _port(value: Any, where: str) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProbeConfigError(
            f"{where}: port {value!r} is not a number "
            "(named ports must be resolved by the injector)"
        )
    if not 1 <= value <= 65535:
        raise ProbeConfigError(f"{where}: port {value} is out of range 1-65535")
    return value


def _host(value: Any, where: str) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise ProbeConfigError(f"{where}: host must be a string")
    return value


def _http(spec: Mapping[str, Any], where: str) -> HttpProbe:
    scheme = str(spec.get("scheme") or "HTTP").upper()
    if scheme not in ("HTTP", "HTTPS"):
        raise ProbeConfigError(f"{where}: scheme {scheme!r} is neither HTTP nor HTTPS")
    path = spec.get("path") or "/"
    if not isinstance(path, str):
        raise ProbeConfigError(f"{where}: path must be a string")
    if not path.startswith("/"):
        path = "/" + path
    headers: list[tuple[str, str]] = []
    for header in spec.get("httpHeaders") or []:
        if not isinstance(header, Mapping) or not isinstance(header.get("name"), str):
            raise ProbeConfigError(f"{where}: httpHeaders entries need a name and a value")
        headers.append((header["name"], str(header.get("value", ""))))
    return HttpProbe(
        port=_port(spec.get("port"), where),
        path=path,
        scheme="HTTPS" if scheme == "HTTPS" else "HTTP",
        host=_host(spec.get("host"), where),
        headers=tuple(headers),
    )


def parse_probe(path: str, spec: Any) -> AppProbe:
    where = f"ISTIO_KUBE_APP_PROBERS[{path!r}]"
    if not isinstance(spec, Mapping):
        raise ProbeConfigError(f"{where}: expected an object")
    action: HttpProbe | TcpProbe | GrpcProbe
    if isinstance(spec.get("httpGet"), Mapping):
        action = _http(spec["httpGet"], where)
    elif isinstance(spec.get("tcpSocket"), Mapping):
        tcp = spec["tcpSocket"]
        action = TcpProbe(port=_port(tcp.get("port"), where), host=_host(tcp.get("host"), where))
    elif isinstance(spec.get("grpc"), Mapping):
        grpc = spec["grpc"]
        service = grpc.get("service") or ""
        if not isinstance(service, str):
            raise ProbeConfigError(f"{where}: grpc.service must be a string")
        action = GrpcProbe(port=_port(grpc.get("port"), where), service=service)
    else:
        raise ProbeConfigError(f"{where}: needs one of httpGet, tcpSocket or grpc")
    timeout = spec.get("timeoutSeconds", DEFAULT_TIMEOUT_SECONDS)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ProbeConfigError(f"{where}: timeoutSeconds must be a positive number")
    return AppProbe(action=action, timeout=float(timeout))


def parse_app_probers(encoded: str) -> dict[str, AppProbe]:
    """The probes by status-server path; empty for an empty env value."""
    if not encoded.strip():
        return {}
    try:
        document = json.loads(encoded)
    except json.JSONDecodeError as exc:
        raise ProbeConfigError(f"ISTIO_KUBE_APP_PROBERS is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ProbeConfigError("ISTIO_KUBE_APP_PROBERS must be a JSON object")
    probes: dict[str, AppProbe] = {}
    for path, spec in document.items():
        if not path.startswith(APP_HEALTH_PREFIX):
            raise ProbeConfigError(
                f"ISTIO_KUBE_APP_PROBERS: path {path!r} does not start with {APP_HEALTH_PREFIX}"
            )
        probes[path] = parse_probe(path, spec)
    return probes
