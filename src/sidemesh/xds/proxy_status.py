"""The `proxy-status` table: one row per connected sidecar, as `AdsServer.status()` describes
it, with Istio's columns (per xDS type SYNCED, STALE, NACK or NOT SENT). Shared by
`sidemesh proxy-status` and the demo."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

TYPES = ("cds", "lds", "eds", "rds")


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
