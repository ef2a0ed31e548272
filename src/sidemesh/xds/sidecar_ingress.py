"""The inbound side a Sidecar's `ingress` listeners ask for: one decision per listener.

With `ingress` listeners the workload's inbound ports are those listeners, not its Services'
target ports (Istio's rule): traffic arriving on a listener's port goes to its
`defaultEndpoint`, its `port.protocol` chooses HTTP or TCP filter chains, and mTLS, request
policy and telemetry apply as on any inbound port (`inbound.py` builds the chains).

Pure. Every listener yields an `IngressPort` and a reason: what it is served as, or why it is
refused. A refused port still gets a chain of its own that drops the connection, so traffic the
user meant for a listener we cannot serve is never passed through to the app unguarded.

defaultEndpoint forms (Istio's):
* `127.0.0.1:PORT`, `[::1]:PORT` — the app on loopback (the classic use: an app listening only
  on 127.0.0.1 becomes reachable from the mesh, and only through the proxy);
* `0.0.0.0:PORT`, `[::]:PORT`, `:PORT` — the app on the pod's own address; the proxy connects
  from 127.0.0.6, as Istio does, so capture lets the connection through;
* `unix:///path` or `unix://@abstract` — the app's socket (Envoy connects to a pipe address);
* unset — our inbound default: 127.0.0.1 and the listener's port.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sidemesh.api.networking.sidecar import UNIX_PREFIX, IngressListener
from sidemesh.xds.cluster_policy import connection_pool_fields
from sidemesh.xds.envoy_json import canonical
from sidemesh.xds.model import Protocol, port_protocol
from sidemesh.xds.resource_names import PROXY_PORTS

LOOPBACK_FORWARD = "127.0.0.1"  # the inbound default (`inbound.INBOUND_FORWARD_ADDRESS`)
POD_ADDRESS_SOURCE = "127.0.0.6"  # Istio's inbound source towards the pod's own address
_WILDCARDS = ("", "0.0.0.0", "[::]")
_LOOPBACKS = {"127.0.0.1": "127.0.0.1", "[::1]": "::1"}


@dataclass(frozen=True, order=True)
class Forward:
    """Where an inbound port's traffic goes: an address and port, or a unix socket."""

    address: str = ""
    port: int = 0
    pipe: str = ""  # a unix socket path ("@name": Linux's abstract namespace)
    source: str = ""  # the proxy's source address towards it ("" = the kernel's choice)


@dataclass(frozen=True, order=True)
class IngressPort:
    """One ingress listener as the inbound side serves it (all hashable: part of a shape)."""

    port: int
    protocol: Protocol
    forward: Forward
    bind: str = ""  # only traffic to this address (captured), "" = any address of the pod
    listen: str = ""  # captureMode NONE: the address of a listener of its own, bound
    cluster_fields: str = ""  # canonical JSON of connectionPool's cluster fields
    refused: bool = False  # served as a drop: the listener asks for what we cannot do


@dataclass(frozen=True)
class IngressDecision:
    port: IngressPort
    reason: str


def ingress_decisions(
    listeners: Sequence[IngressListener], *, pod_ip: str
) -> tuple[IngressDecision, ...]:
    """Each listener of a Sidecar's `ingress`, decided for a pod at `pod_ip`."""
    return tuple(_decide(listener, pod_ip) for listener in listeners)


def _decide(listener: IngressListener, pod_ip: str) -> IngressDecision:
    number = listener.port.number
    protocol = port_protocol("", listener.port.protocol or "TCP")
    refused = IngressPort(number, protocol, Forward(), refused=True)
    if number in PROXY_PORTS:
        return IngressDecision(refused, f"port {number} is one of the proxy's own ports; "
                               "connections to it are dropped")  # fmt: skip
    if listener.tls is not None:
        # Certificate files named by the Sidecar live in the pod; one missing file would make
        # Envoy refuse the whole listener update, every other port with it.
        return IngressDecision(refused, f"port {number}: ingress tls (the pod's own "
                               "certificate files) is not supported; connections to it are "
                               "dropped rather than served without the TLS asked for")  # fmt: skip
    forward, where = _forward(listener.default_endpoint, number, pod_ip)
    if forward is None:
        return IngressDecision(refused, f"port {number}: {where}; connections to it are dropped")
    bind = listener.bind or ""
    if bind in ("0.0.0.0", "::"):
        bind = ""
    listen = ""
    if listener.capture_mode == "NONE":
        listen = bind or pod_ip
    fields = ""
    if listener.connection_pool is not None:
        fields = canonical(connection_pool_fields(listener.connection_pool))
    port = IngressPort(number, protocol, forward, bind, listen, fields)
    reason = f"port {number} ({protocol}) forwarded to {where}"
    if bind:
        reason += f", for connections to {bind} only"
    if listen:
        reason += (
            f"; captureMode NONE: also a listener bound to {listen}:{number} (while "
            "capture redirects the port, connections arrive through 15006 as usual)"
        )
    return IngressDecision(port, reason)


def _forward(endpoint: str | None, number: int, pod_ip: str) -> tuple[Forward | None, str]:
    """Where to, and how to say it; None (with the reason) for a form validation refuses."""
    if not endpoint:
        return Forward(LOOPBACK_FORWARD, number), f"{LOOPBACK_FORWARD}:{number} (the default)"
    if endpoint.startswith(UNIX_PREFIX):
        path = endpoint[len(UNIX_PREFIX) :]
        return Forward(pipe=path), f"the unix socket {path}"
    host, _, port_text = endpoint.rpartition(":")
    port = int(port_text) if port_text.isdigit() else 0
    if host in _LOOPBACKS and port:
        return Forward(_LOOPBACKS[host], port), endpoint
    if host in _WILDCARDS and port:
        where = f"the pod address {pod_ip}:{port}"
        return Forward(pod_ip, port, source=POD_ADDRESS_SOURCE), where
    return None, f"defaultEndpoint {endpoint!r} is not one of Istio's forms"
