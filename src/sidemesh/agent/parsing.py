"""Small parsers for the agent's inputs (pure): durations, addresses, log levels, podinfo files.

Each raises ValueError with a message a user can act on; `config` adds which setting it was.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from typing import Final

from sidemesh.api.durations import go_duration_seconds

ENVOY_LOG_LEVELS: Final = frozenset(
    {"trace", "debug", "info", "warning", "warn", "error", "critical", "off"}
)
_AGENT_LOG_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "none": logging.CRITICAL + 10,
}


def parse_duration(text: str) -> float:
    """Seconds in a Go/protobuf duration ("5s", "1m30s", "500ms") or a bare number of seconds."""
    text = text.strip()
    if not text:
        raise ValueError("empty duration")
    try:
        seconds = float(text)
    except ValueError:
        parsed = go_duration_seconds(text)
        if parsed is None:
            raise ValueError(f"{text!r} is not a duration (examples: 5s, 1m30s, 500ms)") from None
        seconds = parsed
    if seconds < 0:
        raise ValueError(f"{text!r} is negative")
    return seconds


def split_host_port(address: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` → (host, port)."""
    host, sep, port_text = address.strip().rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{address!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{address!r}: write IPv6 addresses as [address]:port")
    return host, int(port_text)


def is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def split_envoy_log_level(level: str, component_levels: str) -> tuple[str, str]:
    """Envoy's `--log-level` and `--component-log-level` from Istio's two flags.

    Like Istio, `--proxyLogLevel` may itself carry `component:level` entries
    ("warning,upstream:debug"); they replace `--proxyComponentLogLevel` when present.
    """
    base = "warning"
    components: list[str] = []
    for entry in filter(None, (part.strip() for part in level.split(","))):
        name, sep, value = entry.partition(":")
        if sep:
            components.append(f"{name}:{_envoy_level(value)}")
        else:
            base = _envoy_level(name)
    if not components:
        for entry in filter(None, (part.strip() for part in component_levels.split(","))):
            name, sep, value = entry.partition(":")
            if not sep or not name:
                raise ValueError(f"component log level {entry!r} is not component:level")
            components.append(f"{name}:{_envoy_level(value)}")
    return base, ",".join(components)


def _envoy_level(value: str) -> str:
    value = value.strip().lower()
    if value not in ENVOY_LOG_LEVELS:
        raise ValueError(
            f"unknown Envoy log level {value!r} ({', '.join(sorted(ENVOY_LOG_LEVELS))})"
        )
    return value


def parse_agent_log_level(text: str) -> int:
    """The Python logging level from Istio's `--log_output_level` ("default:info", "warn")."""
    chosen = "info"
    for entry in filter(None, (part.strip() for part in text.split(","))):
        scope, sep, value = entry.partition(":")
        if not sep:
            chosen = scope
        elif scope == "default":
            chosen = value
    level = _AGENT_LOG_LEVELS.get(chosen.strip().lower())
    if level is None:
        raise ValueError(f"unknown log level {chosen!r} ({', '.join(_AGENT_LOG_LEVELS)})")
    return level


def parse_downward_api_file(text: str) -> dict[str, str]:
    """A Kubernetes downwardAPI labels/annotations file: one `key="quoted value"` per line."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, quoted = line.partition("=")
        if not sep or not key.strip():
            continue
        quoted = quoted.strip()
        try:
            value = json.loads(quoted)  # Go's strconv.Quote output is JSON for all common text
        except ValueError:
            value = quoted.strip('"')
        result[key.strip()] = value if isinstance(value, str) else str(value)
    return result
