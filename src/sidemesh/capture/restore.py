"""Our part of the iptables tables, and the restore transaction that puts it in place.

Applying must be idempotent and cleanup must remove exactly our chains and the jumps to them,
whatever else lives in the tables (a CNI plugin's rules, a previous run with other flags). Both
are the same computation: given the current `iptables-save` text, produce `--noflush` restore
input that

* declares each of our chains, which creates it or flushes it (so its body is rewritten);
* keeps a jump from a built-in chain that is already there (it keeps its position, and the
  second apply changes nothing), appends a missing one, deletes any other jump to our chains;
* flushes and deletes our chains that are no longer wanted (cleanup: all of them).

One transaction per address family, so the tables never hold a half-applied rule set.
"""

from __future__ import annotations

import itertools
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

CHAIN_INBOUND: Final = "ISTIO_INBOUND"
CHAIN_REDIRECT: Final = "ISTIO_REDIRECT"
CHAIN_IN_REDIRECT: Final = "ISTIO_IN_REDIRECT"
CHAIN_OUTPUT: Final = "ISTIO_OUTPUT"
CHAIN_DIVERT: Final = "ISTIO_DIVERT"
CHAIN_TPROXY: Final = "ISTIO_TPROXY"
CHAIN_AWAIT_PROXY: Final = "ISTIO_AWAIT_PROXY"

OUR_CHAINS: Final = frozenset(
    {
        CHAIN_INBOUND,
        CHAIN_REDIRECT,
        CHAIN_IN_REDIRECT,
        CHAIN_OUTPUT,
        CHAIN_DIVERT,
        CHAIN_TPROXY,
        CHAIN_AWAIT_PROXY,
    }
)
"""Every chain sidemesh may create, in any table; cleanup removes these and nothing else."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One `-A CHAIN SPEC` line; `spec` is the canonical iptables-save text after the chain."""

    chain: str
    spec: str

    def render(self, operation: str = "-A") -> str:
        return f"{operation} {self.chain} {self.spec}"


@dataclass(frozen=True, slots=True)
class TableRules:
    """Our part of one table: chains we own, jumps from built-in chains, rules in our chains."""

    table: str
    chains: tuple[str, ...]
    jumps: tuple[Rule, ...]
    rules: tuple[Rule, ...]


def declare_chain(chain: str) -> str:
    """Restore-input line that creates a user chain, or flushes it when it exists (--noflush)."""
    return f":{chain} - [0:0]"


@dataclass(frozen=True, slots=True)
class SavedTable:
    """One table as `iptables-save` printed it."""

    builtin_chains: frozenset[str] = frozenset()
    user_chains: frozenset[str] = frozenset()
    rules: tuple[Rule, ...] = ()


def parse_save(text: str) -> dict[str, SavedTable]:
    """Parse `iptables-save` output into tables; counters and comments are ignored."""
    tables: dict[str, SavedTable] = {}
    name: str | None = None
    builtin: set[str] = set()
    user: set[str] = set()
    rules: list[Rule] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            name, builtin, user, rules = line[1:], set(), set(), []
        elif name is None:
            raise ValueError(f"iptables-save output has a line outside any table: {line!r}")
        elif line.startswith(":"):
            chain, policy, *_ = line[1:].split()
            (user if policy == "-" else builtin).add(chain)
        elif line.startswith("-A "):
            _, chain, spec = line.split(" ", 2)
            rules.append(Rule(chain, spec))
        elif line == "COMMIT":
            tables[name] = SavedTable(frozenset(builtin), frozenset(user), tuple(rules))
            name = None
        else:
            raise ValueError(f"unexpected line in iptables-save output: {line!r}")
    return tables


def plan_transaction(desired: Sequence[TableRules], saved: Mapping[str, SavedTable]) -> str:
    """Restore input (for `--noflush`) that turns `saved` into `saved` plus exactly `desired`.

    Pass no desired tables to get the cleanup transaction. Returns "" when there is nothing to
    do (cleanup of tables that hold none of our rules)."""
    wanted = {table.table: table for table in desired}
    names = [table.table for table in desired]
    names += sorted(name for name in saved if name not in wanted and _holds_ours(saved[name]))
    return "".join(
        _plan_table(name, wanted.get(name), saved.get(name, SavedTable())) for name in names
    )


def _holds_ours(table: SavedTable) -> bool:
    return bool(table.user_chains & OUR_CHAINS) or any(
        jump_target(rule) in OUR_CHAINS for rule in table.rules
    )


def _plan_table(name: str, desired: TableRules | None, saved: SavedTable) -> str:
    chains = desired.chains if desired else ()
    stale_chains = sorted((saved.user_chains & OUR_CHAINS) - set(chains))
    wanted_jumps = list(desired.jumps) if desired else []
    deletions: list[Rule] = []
    for rule in saved.rules:
        target = jump_target(rule)
        if target not in OUR_CHAINS or rule.chain in OUR_CHAINS:
            continue  # not a jump into our chains, or inside one (rewritten anyway)
        if rule.chain not in saved.builtin_chains and target not in stale_chains:
            continue  # someone else's chain jumping to one of ours that stays: theirs
        kept = next((jump for jump in wanted_jumps if _same_rule(jump, rule)), None)
        if kept is not None:
            wanted_jumps.remove(kept)  # already in place: keep it where it is
        else:
            deletions.append(rule)
    lines = [f"*{name}"]
    lines += [declare_chain(chain) for chain in (*chains, *stale_chains)]
    lines += [rule.render("-D") for rule in deletions]
    lines += [rule.render() for rule in wanted_jumps]
    lines += [rule.render() for rule in (desired.rules if desired else ())]
    lines += [f"-X {chain}" for chain in stale_chains]
    lines.append("COMMIT")
    return "".join(f"{line}\n" for line in lines)


def _tokens(spec: str) -> list[str]:
    try:
        return shlex.split(spec)
    except ValueError:  # unbalanced quotes in a foreign rule's comment
        return spec.split()


def jump_target(rule: Rule) -> str | None:
    """The chain or target `rule` jumps to (None: it has no -j/-g)."""
    tokens = _tokens(rule.spec)
    for flag, target in itertools.pairwise(tokens):
        if flag in ("-j", "--jump", "-g", "--goto"):
            return target
    return None


def _same_rule(left: Rule, right: Rule) -> bool:
    return left.chain == right.chain and _tokens(left.spec) == _tokens(right.spec)
