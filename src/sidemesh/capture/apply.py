"""Putting a rule set into the current network namespace, and taking it out again.

The only module of `capture` that touches the system: it runs `iptables-save` to learn the
current state, `iptables-restore --noflush` with the transaction `restore.plan_transaction`
computed, and `ip` for TPROXY policy routing and the IPv6 passthrough address. IPv4 is required;
IPv6 is applied when the kernel and the tools allow it and skipped with a note otherwise.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from sidemesh.capture.config import CaptureConfig
from sidemesh.capture.restore import parse_save, plan_transaction
from sidemesh.capture.rules import FamilyRules, RuleSet, TproxyRouting, build_capture_rules

_CAP_NET_ADMIN: Final = 12
_COMMAND_TIMEOUT_SECONDS: Final = 30
_MAX_RULE_DELETIONS: Final = 64  # an `ip rule` can be added many times; never loop forever
_RESTORE_ERROR_LINE = re.compile(r"line:? (\d+)")


class CaptureError(Exception):
    """Capture could not be set up or removed; the message says why and what to do."""


def apply_capture(rules: RuleSet) -> list[str]:
    """Apply `rules` idempotently; return notes about anything skipped (e.g. IPv6)."""
    _require_net_admin()
    notes: list[str] = []
    for family in _usable_families(rules, notes):
        _apply_ip_commands(family)
        saved = parse_save(_run([_save_command(family)]).stdout)
        _restore(family, plan_transaction(family.tables, saved))
    return notes


def cleanup_capture(config: CaptureConfig, *, dry_run: bool = False) -> tuple[str, list[str]]:
    """Remove our chains, the jumps to them, TPROXY policy routing and the IPv6 passthrough
    address; absent pieces are fine, so running it twice is harmless.

    Returns the text of what was (with `dry_run`: would be) done, and notes."""
    _require_net_admin()
    notes: list[str] = []
    report: list[str] = []
    for family in _usable_families(build_capture_rules(config), notes):
        saved = parse_save(_run([_save_command(family)]).stdout)
        transaction = plan_transaction((), saved)
        report.append(f"### IPv{family.family}: {family.restore_command} --noflush\n")
        report.append(transaction or "# none of our chains or jumps present\n")
        if transaction and not dry_run:
            _restore(family, transaction)
        # Whatever mode the rules were applied with: TPROXY routing may be there.
        applied = FamilyRules(
            family=family.family,
            tables=(),
            tproxy_routing=TproxyRouting(config.tproxy_mark, config.tproxy_route_table),
            loopback_addresses=family.loopback_addresses,
        )
        undo = [_undo(command) for command in applied.ip_commands()]
        report.append(f"### IPv{family.family}: ip commands (absent is fine)\n")
        report.extend(" ".join(command) + "\n" for command in undo)
        if dry_run:
            continue
        if shutil.which("ip") is None:
            notes.append("ip (iproute2) not found: policy routing and addresses left as they are")
            continue
        for command in undo:
            _delete_repeatedly(command)
    return "".join(report), notes


def _require_net_admin() -> None:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError as error:
        raise CaptureError(
            f"cannot read /proc/self/status to check capabilities: {error}"
        ) from None
    effective = next(
        (int(line.split()[1], 16) for line in status.splitlines() if line.startswith("CapEff:")),
        0,
    )
    if not effective >> _CAP_NET_ADMIN & 1:
        raise CaptureError(
            "changing iptables rules needs CAP_NET_ADMIN: run as root, or give the istio-init"
            " container the NET_ADMIN and NET_RAW capabilities"
        )


def _usable_families(rules: RuleSet, notes: list[str]) -> list[FamilyRules]:
    """IPv4 always (missing tools are an error); IPv6 only when it can be applied."""
    missing = _missing_tools(rules.ipv4)
    if missing:
        raise CaptureError(f"{', '.join(missing)} not found in PATH; install iptables")
    reason = _ipv6_unusable_reason(rules.ipv6)
    if reason is None:
        return [rules.ipv4, rules.ipv6]
    notes.append(f"IPv6 skipped: {reason}")
    return [rules.ipv4]


def _save_command(family: FamilyRules) -> str:
    return "iptables-save" if family.family == 4 else "ip6tables-save"


def _missing_tools(family: FamilyRules) -> list[str]:
    tools = (family.restore_command, _save_command(family))
    return [name for name in tools if shutil.which(name) is None]


def _ipv6_unusable_reason(family: FamilyRules) -> str | None:
    missing = _missing_tools(family)
    if missing:
        return f"{', '.join(missing)} not found in PATH"
    if not Path("/proc/net/if_inet6").exists():
        return "the kernel has no IPv6 support"
    disabled = Path("/proc/sys/net/ipv6/conf/all/disable_ipv6")
    if disabled.exists() and disabled.read_text().strip() == "1":
        return "IPv6 is disabled in this network namespace"
    return None


def _restore(family: FamilyRules, transaction: str) -> None:
    result = _run([family.restore_command, "--noflush"], stdin=transaction, check=False)
    if result.returncode != 0:
        detail = result.stderr.strip()
        match = _RESTORE_ERROR_LINE.search(detail)
        lines = transaction.splitlines()
        if match and 0 < int(match.group(1)) <= len(lines):
            offending = lines[int(match.group(1)) - 1]
            detail += f"\noffending input line: {offending}"
            if "-m socket" in offending:
                detail += (
                    "\nthe kernel's socket match (xt_socket) is missing: load it, or pass"
                    " --while-proxy-down refuse to capture without holding connections"
                )
        raise CaptureError(f"{family.restore_command} failed: {detail}")


def _apply_ip_commands(family: FamilyRules) -> None:
    for command in family.ip_commands():
        if command[2:4] == ("rule", "add"):
            # `ip rule add` is not idempotent: remove what an earlier run left first.
            _delete_repeatedly(_undo(command))
        _run(command)


def _undo(command: tuple[str, ...]) -> tuple[str, ...]:
    """`ip -N OBJECT add|replace ARGS` -> `ip -N OBJECT del ARGS`."""
    return (*command[:3], "del", *command[4:])


def _delete_repeatedly(command: tuple[str, ...]) -> None:
    """Run a deletion until it fails: absent is the goal, so failure is expected."""
    for _ in range(_MAX_RULE_DELETIONS):
        if _run(command, check=False).returncode != 0:
            return


def _run(
    argv: Sequence[str], *, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=_COMMAND_TIMEOUT_SECONDS,
            check=False,
        )
    except FileNotFoundError:
        raise CaptureError(f"{argv[0]} not found in PATH") from None
    except subprocess.TimeoutExpired:
        raise CaptureError(
            f"{' '.join(argv)} did not finish in {_COMMAND_TIMEOUT_SECONDS} s"
        ) from None
    if check and result.returncode != 0:
        raise CaptureError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result
