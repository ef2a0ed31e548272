"""`sidemesh proxy-status`: every connected sidecar and whether it has the latest config.

Reads the control plane's `/debug/syncz` (monitoring port 15014) and prints Istio's columns:
per xDS type SYNCED (ACKed the latest), STALE (sent, not yet ACKed), NACK (rejected; the
error is shown with --details) or NOT SENT.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

import click
import orjson

TYPES = ("cds", "lds", "eds", "rds")


def fetch_status(address: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    url = f"http://{address}/debug/syncz"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        rows: list[dict[str, Any]] = orjson.loads(response.read())
        return rows


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
    lines = []
    for row in rows:
        for short, state in sorted(row.get("types", {}).items()):
            if state.get("error"):
                lines.append(f"{row.get('pod')} {short.upper()} NACK: {state['error']}")
    return "\n".join(lines)


@click.command("proxy-status")
@click.option(
    "--address", default="127.0.0.1:15014", show_default=True,
    help="Control-plane monitoring address (host:port).",
)  # fmt: skip
@click.option("--details", is_flag=True, help="Also print the errors of NACKed responses.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw status as JSON.")
def proxy_status(*, address: str, details: bool, as_json: bool) -> None:
    """Show every connected sidecar: revision, control plane, and per-type sync state."""
    try:
        rows = fetch_status(address)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read proxy status from {address}: {exc}") from exc
    if as_json:
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(render_table(rows))
    if details:
        text = render_details(rows)
        if text:
            click.echo(text)
