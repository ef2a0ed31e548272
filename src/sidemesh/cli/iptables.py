"""`sidemesh iptables`: what the injected `istio-init` container runs.

It takes istio-iptables' flags (short ones as the injector renders them, long ones as Istio
names them), so an Istio-style pod spec works unchanged. Values arrive as strings and are
validated by `capture.config`, which names the flag of any bad value; usage errors exit with
status 2, failures to apply with status 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

from sidemesh.api.names import PORT_INBOUND_CAPTURE, PORT_OUTBOUND_CAPTURE, PROXY_UID
from sidemesh.capture import (
    CaptureError,
    apply_capture,
    build_capture_rules,
    cleanup_capture,
    parse_capture_config,
)
from sidemesh.capture.config import ALL, DEFAULT_TPROXY_MARK, DEFAULT_TPROXY_ROUTE_TABLE

_F = TypeVar("_F", bound=Callable[..., object])


def _value(*names: str, default: str | None, help: str) -> Callable[[_F], _F]:
    """A string-valued option; "" is a legitimate value (e.g. `-x ""`: exclude nothing)."""
    return click.option(*names, type=str, default=default, show_default=True, help=help)


@click.command("iptables", context_settings={"help_option_names": ["-h", "--help"]})
@_value(
    "-p",
    "--proxy-port",
    "--envoy-port",
    "proxy_port",
    default=str(PORT_OUTBOUND_CAPTURE),
    help="Port outbound TCP is redirected to (Envoy's outbound listener).",
)
@_value(
    "-z",
    "--inbound-capture-port",
    "inbound_capture_port",
    default=str(PORT_INBOUND_CAPTURE),
    help="Port inbound TCP is redirected to (Envoy's inbound listener).",
)
@_value(
    "-u",
    "--proxy-uid",
    "proxy_uid",
    default=str(PROXY_UID),
    help="Comma list of uids whose traffic is never captured (the proxy's).",
)
@_value(
    "-g",
    "--proxy-gid",
    "proxy_gid",
    default=None,
    help="Comma list of gids whose traffic is never captured. [default: the -u list]",
)
@_value(
    "-m",
    "--istio-inbound-interception-mode",
    "mode",
    default="REDIRECT",
    help="How inbound connections reach the proxy: REDIRECT or TPROXY.",
)
@_value(
    "-t",
    "--istio-inbound-tproxy-mark",
    "tproxy_mark",
    default=str(DEFAULT_TPROXY_MARK),
    help="Packet mark used in TPROXY mode.",
)
@_value(
    "-r",
    "--istio-inbound-tproxy-route-table",
    "tproxy_route_table",
    default=str(DEFAULT_TPROXY_ROUTE_TABLE),
    help="Routing table used in TPROXY mode.",
)
@_value(
    "-i",
    "--istio-service-cidr",
    "include_outbound_ranges",
    default=ALL,
    help="Comma list of CIDRs whose outbound TCP is captured; '*' = all, '' = none.",
)
@_value(
    "-x",
    "--istio-service-exclude-cidr",
    "exclude_outbound_ranges",
    default="",
    help="Comma list of CIDRs never captured outbound.",
)
@_value(
    "-b",
    "--istio-inbound-ports",
    "include_inbound_ports",
    default=ALL,
    help="Comma list of inbound ports captured; '*' = all, '' = no inbound capture.",
)
@_value(
    "-d",
    "--istio-local-exclude-ports",
    "exclude_inbound_ports",
    default="",
    help="Comma list of inbound ports never captured (only with -b '*').",
)
@_value(
    "-q",
    "--istio-include-outbound-ports",
    "--istio-outbound-ports",
    "include_outbound_ports",
    default="",
    help="Comma list of outbound ports captured whatever the destination.",
)
@_value(
    "-o",
    "--istio-exclude-outbound-ports",
    "--istio-local-outbound-ports-exclude",
    "exclude_outbound_ports",
    default="",
    help="Comma list of outbound ports never captured.",
)
@_value(
    "-k",
    "--kube-virt-interfaces",
    "reroute_virtual_interfaces",
    default="",
    help="Comma list of virtual interfaces whose incoming traffic is captured as outbound.",
)
@_value(
    "-c",
    "--istio-exclude-interfaces",
    "exclude_interfaces",
    default="",
    help="Comma list of interfaces whose traffic is never captured.",
)
@_value(
    "--while-proxy-down",
    "while_proxy_down",
    default="hold",
    help="Captured connections while the proxy does not listen (restart, start-up): 'hold'"
    " drops their SYN so the client's TCP retries until it listens; 'refuse' resets them.",
)
@click.option("-n", "--dry-run", is_flag=True, help="Print the rules; change nothing.")
@click.option("--cleanup", is_flag=True, help="Remove our chains, jumps and routing instead.")
def iptables(
    *,
    proxy_port: str,
    inbound_capture_port: str,
    proxy_uid: str,
    proxy_gid: str | None,
    mode: str,
    tproxy_mark: str,
    tproxy_route_table: str,
    include_outbound_ranges: str,
    exclude_outbound_ranges: str,
    include_inbound_ports: str,
    exclude_inbound_ports: str,
    include_outbound_ports: str,
    exclude_outbound_ports: str,
    reroute_virtual_interfaces: str,
    exclude_interfaces: str,
    while_proxy_down: str,
    dry_run: bool,
    cleanup: bool,
) -> None:
    """Set up the pod's traffic capture: outbound TCP to the proxy's outbound port, inbound
    TCP to its inbound port, the proxy's own traffic exempt."""
    try:
        config = parse_capture_config(
            proxy_port=proxy_port,
            inbound_capture_port=inbound_capture_port,
            proxy_uid=proxy_uid,
            proxy_gid=proxy_gid,
            mode=mode,
            tproxy_mark=tproxy_mark,
            tproxy_route_table=tproxy_route_table,
            include_outbound_ranges=include_outbound_ranges,
            exclude_outbound_ranges=exclude_outbound_ranges,
            include_inbound_ports=include_inbound_ports,
            exclude_inbound_ports=exclude_inbound_ports,
            include_outbound_ports=include_outbound_ports,
            exclude_outbound_ports=exclude_outbound_ports,
            reroute_virtual_interfaces=reroute_virtual_interfaces,
            exclude_interfaces=exclude_interfaces,
            while_proxy_down=while_proxy_down,
        )
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    try:
        if cleanup:
            report, notes = cleanup_capture(config, dry_run=dry_run)
            click.echo(report, nl=False)
        else:
            rules = build_capture_rules(config)
            click.echo(rules.render(), nl=False)
            notes = [] if dry_run else apply_capture(rules)
    except CaptureError as error:
        raise click.ClickException(str(error)) from None
    for note in notes:
        click.echo(note, err=True)
