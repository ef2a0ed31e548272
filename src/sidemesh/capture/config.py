"""What traffic the pod's capture rules redirect, parsed from istio-iptables style flag values.

The injector renders these values from pod annotations a user controls, and they end up inside
`iptables-restore` input, so every value is validated here (ports, CIDRs, interface names) and a
bad one is rejected with the flag's name: a pod must never start with half-applied capture.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal, TypeVar

from sidemesh.api.names import PORT_INBOUND_CAPTURE, PORT_OUTBOUND_CAPTURE, PROXY_GID, PROXY_UID

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_T = TypeVar("_T")

ALL: Final = "*"
"""The wildcard of `-i` and `-b`: capture every destination / every inbound port."""

# Istio's defaults for TPROXY mode: the mark Envoy's original_src filter uses and the routing
# table that sends marked packets to the loopback interface.
DEFAULT_TPROXY_MARK: Final = 1337
DEFAULT_TPROXY_ROUTE_TABLE: Final = 133

# Flag labels used in error messages, so a user can find the offending argument.
FLAG_PROXY_PORT: Final = "-p/--proxy-port"
FLAG_INBOUND_CAPTURE_PORT: Final = "-z/--inbound-capture-port"
FLAG_PROXY_UID: Final = "-u/--proxy-uid"
FLAG_PROXY_GID: Final = "-g/--proxy-gid"
FLAG_MODE: Final = "-m/--istio-inbound-interception-mode"
FLAG_TPROXY_MARK: Final = "-t/--istio-inbound-tproxy-mark"
FLAG_TPROXY_ROUTE_TABLE: Final = "-r/--istio-inbound-tproxy-route-table"
FLAG_INCLUDE_OUTBOUND_RANGES: Final = "-i/--istio-service-cidr"
FLAG_EXCLUDE_OUTBOUND_RANGES: Final = "-x/--istio-service-exclude-cidr"
FLAG_INCLUDE_INBOUND_PORTS: Final = "-b/--istio-inbound-ports"
FLAG_EXCLUDE_INBOUND_PORTS: Final = "-d/--istio-local-exclude-ports"
FLAG_INCLUDE_OUTBOUND_PORTS: Final = "-q/--istio-include-outbound-ports"
FLAG_EXCLUDE_OUTBOUND_PORTS: Final = "-o/--istio-exclude-outbound-ports"
FLAG_VIRTUAL_INTERFACES: Final = "-k/--kube-virt-interfaces"
FLAG_EXCLUDE_INTERFACES: Final = "-c/--istio-exclude-interfaces"
FLAG_WHILE_PROXY_DOWN: Final = "--while-proxy-down"

# Linux interface names are at most 15 bytes; iptables adds a trailing "+" wildcard. Anything
# else (spaces, newlines, quotes) could change the meaning of the restore input.
_INTERFACE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,15}\+?")
_DECIMAL = re.compile(r"[0-9]+")

# Routing tables 253-255 are the kernel's default, main and local tables.
_RESERVED_ROUTE_TABLES: Final = frozenset({253, 254, 255})


class InterceptionMode(enum.StrEnum):
    """How inbound connections reach Envoy (outbound is always NAT REDIRECT)."""

    REDIRECT = "REDIRECT"
    TPROXY = "TPROXY"


class WhileProxyDown(enum.StrEnum):
    """What a captured connection meets while nothing listens on the proxy's port (the proxy
    is restarting, or not started yet).

    HOLD drops the connection's SYN, so the client's TCP sends it again (after 1 s, then
    backing off) and connects once the proxy listens: a restart delays connections instead of
    failing them. The price: with the proxy gone for good, connects hang until the client's
    own timeout instead of failing at once. REFUSE is the kernel's plain answer, a reset."""

    HOLD = "hold"
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptureConfig:
    """Validated capture settings; `ALL` stands for Istio's `*`."""

    proxy_port: int = PORT_OUTBOUND_CAPTURE
    inbound_capture_port: int = PORT_INBOUND_CAPTURE
    proxy_uids: tuple[int, ...] = (PROXY_UID,)
    proxy_gids: tuple[int, ...] = (PROXY_GID,)
    mode: InterceptionMode = InterceptionMode.REDIRECT
    tproxy_mark: int = DEFAULT_TPROXY_MARK
    tproxy_route_table: int = DEFAULT_TPROXY_ROUTE_TABLE
    include_outbound_ranges: Literal["*"] | tuple[IPNetwork, ...] = ALL
    exclude_outbound_ranges: tuple[IPNetwork, ...] = ()
    include_inbound_ports: Literal["*"] | tuple[int, ...] = ALL
    exclude_inbound_ports: tuple[int, ...] = ()
    include_outbound_ports: tuple[int, ...] = ()
    exclude_outbound_ports: tuple[int, ...] = ()
    reroute_virtual_interfaces: tuple[str, ...] = ()
    exclude_interfaces: tuple[str, ...] = ()
    while_proxy_down: WhileProxyDown = WhileProxyDown.HOLD

    @property
    def captures_inbound(self) -> bool:
        return self.include_inbound_ports != ()


def parse_capture_config(
    *,
    proxy_port: str = str(PORT_OUTBOUND_CAPTURE),
    inbound_capture_port: str = str(PORT_INBOUND_CAPTURE),
    proxy_uid: str = str(PROXY_UID),
    proxy_gid: str | None = None,
    mode: str = InterceptionMode.REDIRECT.value,
    tproxy_mark: str = str(DEFAULT_TPROXY_MARK),
    tproxy_route_table: str = str(DEFAULT_TPROXY_ROUTE_TABLE),
    include_outbound_ranges: str = ALL,
    exclude_outbound_ranges: str = "",
    include_inbound_ports: str = ALL,
    exclude_inbound_ports: str = "",
    include_outbound_ports: str = "",
    exclude_outbound_ports: str = "",
    reroute_virtual_interfaces: str = "",
    exclude_interfaces: str = "",
    while_proxy_down: str = WhileProxyDown.HOLD.value,
) -> CaptureConfig:
    """Parse istio-iptables flag values; raise ValueError naming the flag of a bad value.

    Lists are comma separated, empty items are ignored and duplicates dropped. `proxy_gid`
    None means "the same as the uid list", as in istio-iptables.
    """
    uids = _parse_ids(proxy_uid, FLAG_PROXY_UID)
    return CaptureConfig(
        proxy_port=_parse_port(proxy_port, FLAG_PROXY_PORT),
        inbound_capture_port=_parse_port(inbound_capture_port, FLAG_INBOUND_CAPTURE_PORT),
        proxy_uids=uids,
        proxy_gids=uids if proxy_gid is None else _parse_ids(proxy_gid, FLAG_PROXY_GID),
        mode=_parse_mode(mode),
        tproxy_mark=_parse_number(tproxy_mark, FLAG_TPROXY_MARK, low=1, high=2**32 - 1),
        tproxy_route_table=_parse_route_table(tproxy_route_table),
        include_outbound_ranges=(
            ALL
            if include_outbound_ranges.strip() == ALL
            else _parse_ranges(include_outbound_ranges, FLAG_INCLUDE_OUTBOUND_RANGES)
        ),
        exclude_outbound_ranges=_parse_ranges(
            exclude_outbound_ranges, FLAG_EXCLUDE_OUTBOUND_RANGES
        ),
        include_inbound_ports=(
            ALL
            if include_inbound_ports.strip() == ALL
            else _parse_ports(include_inbound_ports, FLAG_INCLUDE_INBOUND_PORTS)
        ),
        exclude_inbound_ports=_parse_ports(exclude_inbound_ports, FLAG_EXCLUDE_INBOUND_PORTS),
        include_outbound_ports=_parse_ports(include_outbound_ports, FLAG_INCLUDE_OUTBOUND_PORTS),
        exclude_outbound_ports=_parse_ports(exclude_outbound_ports, FLAG_EXCLUDE_OUTBOUND_PORTS),
        reroute_virtual_interfaces=_parse_interfaces(
            reroute_virtual_interfaces, FLAG_VIRTUAL_INTERFACES
        ),
        exclude_interfaces=_parse_interfaces(exclude_interfaces, FLAG_EXCLUDE_INTERFACES),
        while_proxy_down=_parse_while_proxy_down(while_proxy_down),
    )


def _items(value: str, flag: str) -> tuple[str, ...]:
    items = [item.strip() for item in value.split(",")]
    if ALL in items:
        wildcard_flags = (FLAG_INCLUDE_OUTBOUND_RANGES, FLAG_INCLUDE_INBOUND_PORTS)
        where = "must be the whole value" if flag in wildcard_flags else "is not allowed here"
        raise ValueError(f"{flag}: {value!r}: the wildcard '*' {where}")
    return _unique(item for item in items if item)


def _unique(values: Iterable[_T]) -> tuple[_T, ...]:
    return tuple(dict.fromkeys(values))


def _parse_number(text: str, flag: str, *, low: int, high: int) -> int:
    text = text.strip()
    if not _DECIMAL.fullmatch(text) or not low <= int(text) <= high:
        raise ValueError(f"{flag}: {text!r} is not a number from {low} to {high}")
    return int(text)


def _parse_port(text: str, flag: str) -> int:
    text = text.strip()
    if not _DECIMAL.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise ValueError(f"{flag}: {text!r} is not a valid port (1-65535)")
    return int(text)


def _parse_ports(value: str, flag: str) -> tuple[int, ...]:
    return _unique(_parse_port(item, flag) for item in _items(value, flag))


def _parse_ids(value: str, flag: str) -> tuple[int, ...]:
    ids = _unique(_parse_number(item, flag, low=0, high=2**32 - 2) for item in _items(value, flag))
    if not ids:
        # Without an exemption Envoy's own connections would be redirected back to Envoy.
        raise ValueError(f"{flag}: at least one id is required, got {value!r}")
    return ids


def _parse_mode(text: str) -> InterceptionMode:
    try:
        return InterceptionMode(text.strip().upper())
    except ValueError:
        choices = ", ".join(mode.value for mode in InterceptionMode)
        raise ValueError(f"{FLAG_MODE}: unknown mode {text!r} (choose from {choices})") from None


def _parse_while_proxy_down(text: str) -> WhileProxyDown:
    try:
        return WhileProxyDown(text.strip().lower())
    except ValueError:
        choices = ", ".join(choice.value for choice in WhileProxyDown)
        raise ValueError(
            f"{FLAG_WHILE_PROXY_DOWN}: unknown value {text!r} (choose from {choices})"
        ) from None


def _parse_route_table(text: str) -> int:
    table = _parse_number(text, FLAG_TPROXY_ROUTE_TABLE, low=1, high=2**32 - 1)
    if table in _RESERVED_ROUTE_TABLES:
        raise ValueError(
            f"{FLAG_TPROXY_ROUTE_TABLE}: '{table}' is a kernel routing table (default/main/local)"
        )
    return table


def _parse_ranges(value: str, flag: str) -> tuple[IPNetwork, ...]:
    ranges: list[IPNetwork] = []
    for item in _items(value, flag):
        try:
            # strict=False: "10.1.2.3/8" means 10.0.0.0/8, as with Go's net.ParseCIDR.
            ranges.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{flag}: {item!r} is not a valid CIDR") from None
    return _unique(ranges)


def _parse_interfaces(value: str, flag: str) -> tuple[str, ...]:
    names = _items(value, flag)
    for name in names:
        if not _INTERFACE_NAME.fullmatch(name):
            raise ValueError(f"{flag}: {name!r} is not a valid interface name")
    return names
