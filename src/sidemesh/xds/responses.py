"""What one proxy is owed for one resource type, and the response bytes that pay it.

Pure: per-type subscription state in, `DiscoveryResponse` / `DeltaDiscoveryResponse` bodies
out, spliced from the resources' pre-encoded fields (`cache.py`), with the caller's nonce.
SotW LDS/CDS are wildcard and must carry every resource of the type whenever one changes (the
protocol), which costs one join of ready bytes; SotW EDS and all of Delta carry only the
resources that changed or were newly asked for, and Delta names the removed ones.
Each response is joined once, nonce included: a LDS response for 1,000 services is megabytes,
and a proxy shape's own set is never concatenated on its own and kept (only the shared base's
bytes are, once for every shape).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sidemesh.api.protowire import length_delimited
from sidemesh.xds.resource_names import TYPE_CLUSTER, TYPE_LISTENER
from sidemesh.xds.resource_sets import TypedResources


@dataclass
class TypeState:
    subscribed: frozenset[str] | None = None  # None: wildcard (every resource of the type)
    sent: TypedResources | None = None  # None until the first response
    pending: set[str] = field(default_factory=set)  # names asked for since: send regardless
    client_versions: dict[str, str] = field(default_factory=dict)  # delta reconnects
    nonce_sent: str = ""
    version_sent: str = ""
    nonce_acked: str = ""
    version_acked: str = ""
    error: str | None = None

    def wants(self, name: str) -> bool:
        return self.subscribed is None or name in self.subscribed

    def status(self) -> str:
        if not self.nonce_sent:  # a delta proxy that reconnected with everything current
            return "SYNCED" if self.version_acked else "NOT SENT"
        if self.error is not None:
            return "NACK"
        return "SYNCED" if self.nonce_acked == self.nonce_sent else "STALE"


def control_plane_field(instance_id: str, *, delta: bool) -> bytes:
    """`ControlPlane control_plane`: field 6 of a SotW response, 7 of a delta one."""
    return length_delimited(7 if delta else 6, length_delimited(1, instance_id.encode()))


def _every_resource(typed: TypedResources) -> list[bytes]:
    """Pieces that concatenate to `typed.encoded`, without building (and caching) it for a
    set extended per proxy shape: the shared base's bytes, then the shape's own resources."""
    if typed.base is None:
        return [typed.encoded]
    return [*_every_resource(typed.base), *(r.any_field for r in typed.own.values())]


def sotw_payload(
    state: TypeState,
    typed: TypedResources,
    changed: tuple[str, ...],
    removed: tuple[str, ...],
    *,
    initial: bool,
    control_plane: bytes,
    nonce: str,
) -> bytes | None:
    body: list[bytes]
    if state.subscribed is None:  # LDS/CDS: the whole state of the world, if it changed
        if not (initial or changed or removed):
            return None
        body = _every_resource(typed)
    else:
        wanted = state.subscribed
        # LDS/CDS asked for by name (gRPC clients): every answer carries every subscribed
        # resource, since a client drops what an answer of these types leaves out.
        full_state = typed.type_url in (TYPE_LISTENER, TYPE_CLUSTER) and bool(
            state.pending or any(n in wanted for n in (*changed, *removed))
        )
        if initial or state.sent is None or full_state:
            names = [n for n in typed.resources if n in wanted]
        else:  # EDS: only what changed or was newly asked for
            names = [n for n in changed if n in state.subscribed]
            names += [n for n in state.pending if n in typed.resources and n not in changed]
            if not names:
                return None
        body = [typed.resources[n].any_field for n in names]
    return b"".join((length_delimited(1, typed.version.encode()), *body,
                     length_delimited(4, typed.type_url.encode()), control_plane,
                     length_delimited(5, nonce.encode())))  # fmt: skip


def delta_payload(
    state: TypeState,
    typed: TypedResources,
    changed: tuple[str, ...],
    removed: tuple[str, ...],
    *,
    control_plane: bytes,
    nonce: str,
) -> bytes | None:
    names = [n for n in changed if state.wants(n)]
    names += [n for n in state.pending if n in typed.resources and n not in changed]
    gone = [n for n in removed if state.wants(n)]
    if state.sent is None and state.subscribed is not None:  # asked for, does not exist
        gone += [n for n in state.subscribed if n not in typed.resources]
    if state.client_versions:  # reconnect: skip what the proxy already has
        known = state.client_versions
        names = [n for n in names if known.get(n) != typed.resources[n].version]
        gone += [n for n in known if n not in typed.resources and state.wants(n)]
    gone += [n for n in state.pending if n not in typed.resources]
    if not names and not gone and (state.sent is not None or state.client_versions):
        # Nothing to say, unless this is the first answer to a proxy that has nothing: Envoy
        # counts a type initialised only once answered, even with nothing (a gateway that no
        # Gateway selects has no listeners). A resuming proxy already has its resources.
        return None
    parts = [length_delimited(1, typed.version.encode())]
    for name in names:
        resource = typed.resources[name]
        entry = (
            length_delimited(3, name.encode())
            + length_delimited(1, resource.version.encode())
            + resource.any_field
        )
        parts.append(length_delimited(2, entry))
    parts.append(length_delimited(4, typed.type_url.encode()))
    parts += [length_delimited(6, n.encode()) for n in sorted(set(gone))]
    parts += [control_plane, length_delimited(5, nonce.encode())]
    return b"".join(parts)
