"""The pod's capture rules as data: which chains, which jumps into them, which rules inside.

Same traffic semantics as Istio's istio-iptables (chain names ISTIO_*, the proxy uid/gid
exemption, the 127.0.0.6 / ::6 inbound-passthrough source), with one structural difference:
everything we add lives in our own chains, and the built-in chains only get one jump per chain
we hook. That is what lets `restore.plan_transaction` re-apply and clean up exactly our rules
without touching anyone else's.

Rules are written in the canonical form `iptables-save` prints (match order, `-m tcp`, marks in
hex), so what `--dry-run` shows is literally what the kernel ends up holding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from sidemesh.capture.config import (
    ALL,
    CaptureConfig,
    InterceptionMode,
    IPNetwork,
    WhileProxyDown,
)
from sidemesh.capture.restore import (
    CHAIN_AWAIT_PROXY,
    CHAIN_DIVERT,
    CHAIN_IN_REDIRECT,
    CHAIN_INBOUND,
    CHAIN_OUTPUT,
    CHAIN_REDIRECT,
    CHAIN_TPROXY,
    Rule,
    TableRules,
    jump_target,
    plan_transaction,
)

# TPROXY mode: the proxy marks its own connections to the pod's address with this mark so
# that they, unlike the app's loopback traffic, are captured as inbound (Istio's value).
PROXY_TO_SELF_MARK: Final = 1338
_FULL_MASK: Final = "0xffffffff"

Family = Literal[4, 6]


@dataclass(frozen=True, slots=True)
class TproxyRouting:
    """Policy routing TPROXY needs: packets with `mark` are looked up in `table`, whose only
    route delivers everything locally via the loopback interface."""

    mark: int
    table: int


@dataclass(frozen=True, slots=True)
class FamilyRules:
    """Everything applied for one address family."""

    family: Family
    tables: tuple[TableRules, ...]
    tproxy_routing: TproxyRouting | None = None
    loopback_addresses: tuple[str, ...] = ()  # added to `lo`; IPv6 needs ::6 for passthrough

    @property
    def restore_command(self) -> str:
        return "iptables-restore" if self.family == 4 else "ip6tables-restore"

    def restore_input(self) -> str:
        """The `--noflush` restore input for tables that hold none of our rules yet."""
        return plan_transaction(self.tables, {})

    def ip_commands(self) -> tuple[tuple[str, ...], ...]:
        """The `ip` invocations for the non-iptables part (applied, or shown by --dry-run)."""
        version = f"-{self.family}"
        commands: list[tuple[str, ...]] = []
        if self.tproxy_routing is not None:
            mark, table = str(self.tproxy_routing.mark), str(self.tproxy_routing.table)
            commands.append(("ip", version, "rule", "add", "fwmark", mark, "lookup", table))
            route = ("local", "default", "dev", "lo", "table", table)
            commands.append(("ip", version, "route", "replace", *route))
        for address in self.loopback_addresses:
            commands.append(("ip", version, "addr", "replace", address, "dev", "lo"))
        return tuple(commands)


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The IPv4 and IPv6 halves of a pod's capture; applied independently."""

    ipv4: FamilyRules
    ipv6: FamilyRules

    @property
    def families(self) -> tuple[FamilyRules, FamilyRules]:
        return (self.ipv4, self.ipv6)

    def render(self) -> str:
        """Human-readable text of everything that would be applied (what --dry-run prints)."""
        parts: list[str] = []
        for rules in self.families:
            parts.append(f"### IPv{rules.family}: {rules.restore_command} --noflush\n")
            parts.append(rules.restore_input())
            commands = rules.ip_commands()
            if commands:
                parts.append(f"### IPv{rules.family}: ip commands\n")
                parts.extend(" ".join(command) + "\n" for command in commands)
        return "".join(parts)


@dataclass(frozen=True, slots=True)
class _Addresses:
    """The per-family addresses the rules mention."""

    family: Family
    loopback: str  # the address an app uses to reach a sidecar-aware localhost service
    passthrough_source: str  # the proxy binds here to reach the app without being re-captured
    any_address: str

    def ranges(self, networks: tuple[IPNetwork, ...]) -> tuple[IPNetwork, ...]:
        return tuple(network for network in networks if network.version == self.family)


_IPV4: Final = _Addresses(4, "127.0.0.1/32", "127.0.0.6/32", "0.0.0.0")
_IPV6: Final = _Addresses(6, "::1/128", "::6/128", "::")


def build_capture_rules(config: CaptureConfig) -> RuleSet:
    """The complete rule set for `config`: pure, deterministic, no I/O."""
    return RuleSet(ipv4=_build_family(config, _IPV4), ipv6=_build_family(config, _IPV6))


def _build_family(config: CaptureConfig, addresses: _Addresses) -> FamilyRules:
    tproxy = config.mode is InterceptionMode.TPROXY and config.captures_inbound
    nat = _nat_table(config, addresses)
    tables = [nat]
    if tproxy:
        tables.append(_mangle_table(config, addresses))
    # IPv4 only: the proxy's capture listeners bind 0.0.0.0, so nothing ever listens for an
    # IPv6 connection redirected to them; held, it would hang until the app gives up instead
    # of being refused at once (and an app trying IPv6 first would not fall back quickly).
    if config.while_proxy_down is WhileProxyDown.HOLD and addresses.family == 4:
        held = _filter_table(config, nat)
        if held is not None:
            tables.append(held)
    return FamilyRules(
        family=addresses.family,
        tables=tuple(tables),
        tproxy_routing=(
            TproxyRouting(config.tproxy_mark, config.tproxy_route_table) if tproxy else None
        ),
        loopback_addresses=(addresses.passthrough_source,) if addresses.family == 6 else (),
    )


def _nat_table(config: CaptureConfig, addresses: _Addresses) -> TableRules:
    rules = [
        Rule(CHAIN_REDIRECT, f"-p tcp -j REDIRECT --to-ports {config.proxy_port}"),
        Rule(CHAIN_IN_REDIRECT, f"-p tcp -j REDIRECT --to-ports {config.inbound_capture_port}"),
    ]
    jumps = []
    prerouting = _virtual_interface_rules(config, addresses)
    if config.mode is InterceptionMode.REDIRECT:
        prerouting += _inbound_port_rules(config, captures=(f"-j {CHAIN_IN_REDIRECT}",))
    if prerouting:
        rules += _excluded_interface_rules(config, CHAIN_INBOUND, "-i") + prerouting
        jumps.append(Rule("PREROUTING", f"-p tcp -j {CHAIN_INBOUND}"))
    rules += _nat_output_rules(config, addresses)
    jumps.append(Rule("OUTPUT", f"-p tcp -j {CHAIN_OUTPUT}"))
    return TableRules(
        table="nat",
        chains=(CHAIN_INBOUND, CHAIN_REDIRECT, CHAIN_IN_REDIRECT, CHAIN_OUTPUT),
        jumps=tuple(jumps),
        rules=tuple(rules),
    )


def _filter_table(config: CaptureConfig, nat: TableRules) -> TableRules | None:
    """Hold connections redirected to the proxy while it does not listen: their SYN is
    dropped rather than answered with a reset, so the client's TCP retries the handshake
    (1 s later, then backing off) and connects once the proxy is back (`WhileProxyDown`).

    Only the ports NAT actually redirects to are held. A SYN is let through when the socket
    match finds a listener on its destination; `--nowildcard` makes the match count a listener
    bound to the wildcard address, which is how Envoy binds. (In TPROXY mode, inbound SYNs
    that find no transparent listener are already dropped by the TPROXY target itself.)"""
    jumped_to = {jump_target(rule) for rule in nat.rules}
    ports = [port for port, chain in ((config.proxy_port, CHAIN_REDIRECT),
                                      (config.inbound_capture_port, CHAIN_IN_REDIRECT))
             if chain in jumped_to]  # fmt: skip
    if not ports:
        return None
    rules: list[Rule] = []
    for port in dict.fromkeys(ports):
        rules.append(
            Rule(
                CHAIN_AWAIT_PROXY, f"-p tcp -m tcp --dport {port} -m socket --nowildcard -j RETURN"
            )
        )
        rules.append(Rule(CHAIN_AWAIT_PROXY, f"-p tcp -m tcp --dport {port} -j DROP"))
    return TableRules(
        table="filter",
        chains=(CHAIN_AWAIT_PROXY,),
        jumps=(
            Rule("INPUT", f"-p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j {CHAIN_AWAIT_PROXY}"),
        ),
        rules=tuple(rules),
    )


def _excluded_interface_rules(config: CaptureConfig, chain: str, direction: str) -> list[Rule]:
    return [Rule(chain, f"{direction} {name} -j RETURN") for name in config.exclude_interfaces]


def _virtual_interface_rules(config: CaptureConfig, addresses: _Addresses) -> list[Rule]:
    """Traffic a VM inside the pod sends through a virtual interface is the VM's *outbound*
    traffic: capture it as such for the included ranges, and never as inbound."""
    rules: list[Rule] = []
    for name in config.reroute_virtual_interfaces:
        if config.include_outbound_ranges == ALL:
            rules.append(Rule(CHAIN_INBOUND, f"-i {name} -j {CHAIN_REDIRECT}"))
        else:
            for network in addresses.ranges(config.include_outbound_ranges):
                rules.append(Rule(CHAIN_INBOUND, f"-d {network} -i {name} -j {CHAIN_REDIRECT}"))
        rules.append(Rule(CHAIN_INBOUND, f"-i {name} -j RETURN"))
    return rules


def _inbound_port_rules(config: CaptureConfig, *, captures: tuple[str, ...]) -> list[Rule]:
    """ISTIO_INBOUND's port selection; `captures` are the match-and-jump suffixes that hand a
    selected connection to Envoy.

    Excluded ports only matter with the wildcard: with a port list, unlisted ports are
    already left alone (as in istio-iptables)."""
    if not config.captures_inbound:
        return []
    if config.include_inbound_ports == ALL:
        rules = [
            Rule(CHAIN_INBOUND, f"-p tcp -m tcp --dport {port} -j RETURN")
            for port in config.exclude_inbound_ports
        ]
        return rules + [Rule(CHAIN_INBOUND, f"-p tcp {capture}") for capture in captures]
    return [
        Rule(CHAIN_INBOUND, f"-p tcp -m tcp --dport {port} {capture}")
        for port in config.include_inbound_ports
        for capture in captures
    ]


def _proxy_owners(config: CaptureConfig) -> list[tuple[str, int]]:
    """The `-m owner` options that identify the proxy's own traffic."""
    return [("--uid-owner", uid) for uid in config.proxy_uids] + [
        ("--gid-owner", gid) for gid in config.proxy_gids
    ]


def _nat_output_rules(config: CaptureConfig, addresses: _Addresses) -> list[Rule]:
    rules = _excluded_interface_rules(config, CHAIN_OUTPUT, "-o")
    # Port exclusions come first: they must hold even for connections back to the pod itself.
    rules += [
        Rule(CHAIN_OUTPUT, f"-p tcp -m tcp --dport {port} -j RETURN")
        for port in config.exclude_outbound_ports
    ]
    # The proxy's inbound passthrough connections to the app.
    rules.append(Rule(CHAIN_OUTPUT, f"-s {addresses.passthrough_source} -o lo -j RETURN"))
    include_ranges = (
        ()
        if config.include_outbound_ranges == ALL
        else addresses.ranges(config.include_outbound_ranges)
    )
    # An explicitly included loopback range means "capture the app's loopback traffic too".
    keep_app_loopback = not any(network.network_address.is_loopback for network in include_ranges)
    for option, owner in _proxy_owners(config):
        # The proxy calling the pod's own address (e.g. a service VIP that resolves to this
        # pod) goes proxy -> proxy inbound -> app, like a call from any other pod.
        rules.append(
            Rule(
                CHAIN_OUTPUT,
                f"! -d {addresses.loopback} -o lo -m owner {option} {owner} -j {CHAIN_IN_REDIRECT}",
            )
        )
        if keep_app_loopback:
            # The app calling itself over loopback or its own address is not mesh traffic.
            rules.append(Rule(CHAIN_OUTPUT, f"-o lo -m owner ! {option} {owner} -j RETURN"))
        # Everything else the proxy sends goes where it was sent: no loop back into Envoy.
        rules.append(Rule(CHAIN_OUTPUT, f"-m owner {option} {owner} -j RETURN"))
    # Sidecar-aware apps and container-to-container calls that name localhost explicitly.
    rules.append(Rule(CHAIN_OUTPUT, f"-d {addresses.loopback} -j RETURN"))
    rules += [
        Rule(CHAIN_OUTPUT, f"-d {network} -j RETURN")
        for network in addresses.ranges(config.exclude_outbound_ranges)
    ]
    rules += [
        Rule(CHAIN_OUTPUT, f"-p tcp -m tcp --dport {port} -j {CHAIN_REDIRECT}")
        for port in config.include_outbound_ports
    ]
    if config.include_outbound_ranges == ALL:
        rules.append(Rule(CHAIN_OUTPUT, f"-j {CHAIN_REDIRECT}"))
    elif include_ranges:
        rules += [
            Rule(CHAIN_OUTPUT, f"-d {network} -j {CHAIN_REDIRECT}") for network in include_ranges
        ]
        rules.append(Rule(CHAIN_OUTPUT, "-j RETURN"))
    return rules


def _mangle_table(config: CaptureConfig, addresses: _Addresses) -> TableRules:
    """TPROXY inbound capture: new connections are handed to Envoy's transparent listener,
    packets of established ones are marked and routed to the loopback interface."""
    mark = f"{config.tproxy_mark:#x}"
    self_mark = f"{PROXY_TO_SELF_MARK:#x}"
    masks = f"--nfmask {_FULL_MASK} --ctmask {_FULL_MASK}"
    inbound = [
        *_excluded_interface_rules(config, CHAIN_INBOUND, "-i"),
        # Packets of the proxy's original-source connections: remember the mark on the
        # connection so that the app's replies are routed back to the proxy.
        Rule(CHAIN_INBOUND, f"-p tcp -m mark --mark {mark} -j CONNMARK --save-mark {masks}"),
        Rule(CHAIN_INBOUND, f"-p tcp -m mark --mark {mark} -j RETURN"),
        Rule(CHAIN_INBOUND, f"-s {addresses.passthrough_source} -i lo -p tcp -j RETURN"),
        # Loopback traffic is captured only when the proxy marked it as proxy -> own pod.
        Rule(CHAIN_INBOUND, f"-i lo -p tcp -m mark ! --mark {self_mark} -j RETURN"),
    ]
    # Packets of connections already handed over are routed to the loopback interface (where
    # the transparent socket picks them up); new connections go through TPROXY.
    inbound += _inbound_port_rules(
        config,
        captures=(
            f"-m conntrack --ctstate RELATED,ESTABLISHED -j {CHAIN_DIVERT}",
            f"-j {CHAIN_TPROXY}",
        ),
    )
    divert = [
        Rule(CHAIN_DIVERT, f"-j MARK --set-xmark {mark}/{_FULL_MASK}"),
        Rule(CHAIN_DIVERT, "-j ACCEPT"),
    ]
    tproxy = [
        Rule(
            CHAIN_TPROXY,
            f"! -d {addresses.loopback} -p tcp -j TPROXY --on-port {config.inbound_capture_port}"
            f" --on-ip {addresses.any_address} --tproxy-mark {mark}/{_FULL_MASK}",
        )
    ]
    output = [
        *_excluded_interface_rules(config, CHAIN_OUTPUT, "-o"),
        Rule(CHAIN_OUTPUT, f"-o lo -p tcp -m mark --mark {mark} -j RETURN"),
    ]
    output += [
        Rule(
            CHAIN_OUTPUT,
            f"! -d {addresses.loopback} -o lo -p tcp -m owner {option} {owner}"
            f" -j MARK --set-xmark {self_mark}/{_FULL_MASK}",
        )
        for option, owner in _proxy_owners(config)
    ]
    output.append(
        Rule(CHAIN_OUTPUT, f"-p tcp -m connmark --mark {mark} -j CONNMARK --restore-mark {masks}")
    )
    return TableRules(
        table="mangle",
        chains=(CHAIN_INBOUND, CHAIN_DIVERT, CHAIN_TPROXY, CHAIN_OUTPUT),
        jumps=(
            Rule("PREROUTING", f"-p tcp -j {CHAIN_INBOUND}"),
            Rule("OUTPUT", f"-p tcp -j {CHAIN_OUTPUT}"),
        ),
        rules=tuple(inbound + divert + tproxy + output),
    )
