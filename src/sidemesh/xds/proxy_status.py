"""The `proxy-status` table: one row per connected sidecar (`status_rows`, which
`AdsServer.status()` serves), with Istio's columns (per xDS type SYNCED, STALE, NACK or NOT
SENT). Shared by `sidemesh proxy-status` and the demo."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sidemesh.xds.metrics import short_type

if TYPE_CHECKING:  # the CLI renders rows without loading the ADS server
    from sidemesh.xds.connection import Connection

TYPES = ("cds", "lds", "eds", "rds")


def status_rows(connections: Iterable[Connection], *, control_plane: str) -> list[dict[str, Any]]:
    """A row per connected proxy and, per type, SYNCED / STALE / NACK / NOT SENT."""
    rows = []
    for connection in connections:
        proxy = connection.proxy
        assert proxy is not None
        rows.append({
            "proxy": proxy.node_id,
            "pod": f"{proxy.pod_name}.{proxy.namespace}",
            "cluster_id": proxy.cluster_id,
            "revision": proxy.revision,
            "istio_version": proxy.istio_version,
            "control_plane": control_plane,
            "protocol": "delta" if connection.delta else "sotw",
            "identity": connection.identity.uri if connection.identity else None,
            "connected_at": connection.connected_at,
            "types": {
                short_type(t): {"status": s.status(), "sent": s.version_sent,
                                "acked": s.version_acked, "error": s.error}
                for t, s in connection.types.items()
            },
        })  # fmt: skip
    return sorted(rows, key=lambda row: str(row["proxy"]))


def render_table(rows: Sequence[dict[str, Any]]) -> str:
    header = ["NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "ISTIOD", "REVISION", "VERSION"]
    table = [header]
    for row in rows:
        types = row.get("types", {})
        table.append([
            str(row.get("pod", row.get("proxy", ""))),
            str(row.get("cluster_id", "Kubernetes")),
            *(str(types.get(t, {}).get("status", "NOT SENT")) for t in TYPES),
            str(row.get("control_plane", "")),
            str(row.get("revision") or ""),
            str(row.get("istio_version") or ""),
        ])  # fmt: skip
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    )


def render_details(rows: Sequence[dict[str, Any]]) -> str:
    """Per NACKed type: Envoy's message, then which version it refused and which it still
    runs (a proxy that refuses a push keeps its last accepted configuration)."""
    lines = []
    for row in rows:
        for short, state in sorted(row.get("types", {}).items()):
            if state.get("error"):
                lines.append(f"{row.get('pod')} {short.upper()} NACK: {state['error']}")
                if state.get("sent"):
                    kept = state.get("acked") or "nothing yet"
                    lines.append(f"  refused version {state['sent']}, still serving {kept}")
    return "\n".join(lines)
