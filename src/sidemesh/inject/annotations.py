"""Parsers for annotation values. Each raises InvalidAnnotation naming the annotation, the
value and what was expected, so a denied pod tells its owner exactly what to fix."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation


class InvalidAnnotation(ValueError):
    def __init__(self, name: str, value: str, expected: str) -> None:
        super().__init__(f'annotation {name}="{value}" is invalid: {expected}')
        self.name = name
        self.value = value


def _items(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def parse_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise InvalidAnnotation(name, value, 'expected "true" or "false"')


def parse_port(name: str, value: str, *, allow_zero: bool = False) -> int:
    try:
        port = int(value.strip())
    except ValueError:
        raise InvalidAnnotation(name, value, "expected a port number") from None
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise InvalidAnnotation(name, value, f"port must be between {low} and 65535")
    return port


def parse_port_list(name: str, value: str, *, allow_wildcard: bool = False) -> str:
    """Validate a comma list of ports; returns it normalised (no blanks), `*` kept if allowed."""
    stripped = value.strip()
    if allow_wildcard and stripped == "*":
        return "*"
    ports = []
    for item in _items(stripped):
        try:
            port = int(item)
        except ValueError:
            raise InvalidAnnotation(name, value, f'"{item}" is not a port number') from None
        if not 1 <= port <= 65535:
            raise InvalidAnnotation(name, value, f"port {port} is outside 1-65535")
        ports.append(str(port))
    return ",".join(ports)


def parse_cidr_list(name: str, value: str, *, allow_wildcard: bool = False) -> str:
    """Validate a comma list of addresses and CIDRs; returns them as written (no blanks), as
    Istio passes them to the capture: host bits are not zeroed here (capture ignores them)."""
    stripped = value.strip()
    if allow_wildcard and stripped == "*":
        return "*"
    cidrs = []
    for item in _items(stripped):
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise InvalidAnnotation(name, value, f'"{item}" is not an IP address or CIDR') from None
        cidrs.append(item)
    return ",".join(cidrs)


# What `istio-init` accepts (capture/config.py): a pod is never admitted with an interface name
# its capture would refuse at start.
_INTERFACE = re.compile(r"^[A-Za-z0-9_.-]{1,15}\+?$")


def parse_interface_list(name: str, value: str) -> str:
    interfaces = _items(value)
    for item in interfaces:
        if not _INTERFACE.fullmatch(item):
            raise InvalidAnnotation(name, value, f'"{item}" is not a network interface name')
    return ",".join(interfaces)


def parse_int(name: str, value: str, *, minimum: int) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise InvalidAnnotation(name, value, "expected a whole number") from None
    if number < minimum:
        raise InvalidAnnotation(name, value, f"must be at least {minimum}")
    return number


_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_SUFFIX = {
    None: Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def parse_quantity(name: str, value: str) -> Decimal:
    """A Kubernetes resource quantity (`100m`, `1.5Gi`, `2e3`), as a number of base units."""
    match = _QUANTITY.match(value.strip())
    if match is None:
        raise InvalidAnnotation(name, value, "expected a Kubernetes quantity such as 100m or 128Mi")
    try:
        number = Decimal(match.group(1))
    except InvalidOperation:
        raise InvalidAnnotation(name, value, "expected a Kubernetes quantity") from None
    if number < 0:
        raise InvalidAnnotation(name, value, "a resource quantity cannot be negative")
    return number * _SUFFIX[match.group(2)]


LOG_LEVELS = ("trace", "debug", "info", "warning", "warn", "error", "critical", "off")


def parse_log_level(name: str, value: str) -> str:
    level = value.strip().lower()
    if level not in LOG_LEVELS:
        raise InvalidAnnotation(name, value, f"expected one of {', '.join(LOG_LEVELS)}")
    return level


def parse_scoped_log_levels(name: str, value: str) -> str:
    """`scope:level,scope:level` as used by componentLogLevel and agentLogLevel."""
    for item in _items(value):
        scope, sep, level = item.partition(":")
        if not sep or not scope or level.lower() not in LOG_LEVELS:
            raise InvalidAnnotation(name, value, f'"{item}" is not scope:level')
    return ",".join(_items(value))


def get(annotations: Mapping[str, str], name: str) -> str | None:
    value = annotations.get(name)
    return value if isinstance(value, str) else None
