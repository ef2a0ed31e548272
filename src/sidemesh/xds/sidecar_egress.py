"""What a Sidecar's `egress` listeners make of a proxy's outbound side: which hosts it sees on
which port, and which listeners of their own (`bind`, `captureMode: NONE`) it gets.

Pure data, decided once per Sidecar; `scoping.Scope` applies it, `sidecar_listeners` builds
the bound listeners. Istio's rules, fitted to our layout (every service VIP:port has an
outbound listener of its own, handed connections by the capture on 15001):

* a listener with a `port` decides which hosts are seen *on that port*: a service's port P is
  visible when the listener of port P matches its host, else, when no listener names P, when
  the listener without a port does; a port no listener covers is not seen at all (no VIP
  listener, no cluster), as in Istio where "the listener with the most specific port" wins;
* `captureMode: NONE` (the app calls the proxy explicitly) gives the listener a listener of
  its own bound to `bind` (default 127.0.0.1) and its port, routing by Host to the hosts it
  sees on that port; with capture (`IPTABLES`, `DEFAULT`) a `bind` address names the original
  destination whose connections that listener takes (not bound: capture hands them over);
* what our design cannot do is said in `reasons`, never skipped silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from sidemesh.api.networking.sidecar import UNIX_PREFIX, Sidecar
from sidemesh.xds.model import Protocol, port_protocol
from sidemesh.xds.resource_names import PROXY_PORTS

NONE_DEFAULT_BIND = "127.0.0.1"  # Istio's: captureMode NONE without a bind


@dataclass(frozen=True)
class BoundEgress:
    """An egress listener that gets an Envoy listener of its own."""

    address: str
    port: int
    protocol: Protocol
    bind_to_port: bool  # captureMode NONE: bound; otherwise reached by capture's hand-off


@dataclass(frozen=True)
class EgressPlan:
    by_port: Mapping[int, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    catch_all: tuple[str, ...] | None = None  # hosts of the listener without a port
    bound: tuple[BoundEgress, ...] = ()
    reasons: tuple[str, ...] = ()  # what each listener does
    limits: tuple[str, ...] = ()  # what a listener asks for that is not done, and why

    def hosts_for(self, port: int) -> tuple[str, ...]:
        """The host patterns that decide what is seen on `port` (() sees nothing)."""
        found = self.by_port.get(port)
        if found is not None:
            return found
        return self.catch_all or ()


def egress_plan(sidecar: Sidecar) -> EgressPlan | None:
    """None when the Sidecar has no egress listeners: everything exported is seen."""
    if not sidecar.egress:
        return None
    by_port: dict[int, tuple[str, ...]] = {}
    catch_all: tuple[str, ...] | None = None
    bound: list[BoundEgress] = []
    reasons: list[str] = []
    limits: list[str] = []
    for index, listener in enumerate(sidecar.egress):
        where = f"egress[{index}]"
        mode = listener.capture_mode or "DEFAULT"
        bind = listener.bind or ""
        if listener.port is None:
            catch_all = (*(catch_all or ()), *listener.hosts)
            if mode == "NONE":
                limits.append(f"{where}: captureMode NONE without a port has nothing to "
                              "listen on; its hosts are seen through capture")  # fmt: skip
            continue
        number = listener.port.number
        by_port[number] = listener.hosts
        reasons.append(f"{where}: on port {number} only the hosts {list(listener.hosts)} "
                       "are seen")  # fmt: skip
        if bind.startswith(UNIX_PREFIX):
            limits.append(f"{where}: a unix domain socket bind ({bind}) is not supported; "
                          f"the listener only scopes its hosts on port {number}")  # fmt: skip
            continue
        if mode != "NONE" and bind in ("", "0.0.0.0", "::"):
            continue  # capture's default: the hosts' own VIP listeners take the traffic
        if number in PROXY_PORTS:
            limits.append(f"{where}: port {number} is one of the proxy's own ports; no "
                          "listener is bound there")  # fmt: skip
            continue
        protocol = port_protocol("", listener.port.protocol or "TCP")
        address = bind or NONE_DEFAULT_BIND
        bound.append(BoundEgress(address, number, protocol, bind_to_port=mode == "NONE"))
        how = "bound" if mode == "NONE" else "taking captured connections to that address"
        reasons.append(f"{where}: a listener {address}:{number} ({protocol}, {how}) routes to "
                       "the hosts seen on that port")  # fmt: skip
    return EgressPlan(MappingProxyType(by_port), catch_all, tuple(bound),
                      tuple(reasons + limits), tuple(limits))  # fmt: skip
