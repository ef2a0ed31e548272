"""Golden tests: each istio-iptables flag combination -> the exact rules `--dry-run` prints.

The expected text lives in `golden/<case>.rules`, headed by the command line it came from.
`SIDEMESH_UPDATE_GOLDEN=1 pytest tests/capture` rewrites the files (and fails); review the
diff by eye.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from golden_files import update_golden, updating
from sidemesh.capture import CaptureConfig, build_capture_rules, parse_capture_config
from sidemesh.capture.restore import OUR_CHAINS, plan_transaction
from sidemesh.cli.iptables import iptables

GOLDEN = Path(__file__).parent / "golden"
UPDATE = updating()

INJECTOR_DEFAULT = [
    "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
    "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020",
]  # fmt: skip

CASES: dict[str, list[str]] = {
    "defaults": [],
    "injector-default": INJECTOR_DEFAULT,
    "include-cidrs-v4-v6": ["-i", "10.0.0.0/8,172.16.0.0/12,fd00:10::/64"],
    "exclude-cidrs-v4-v6": ["-x", "169.254.169.254/32,10.96.0.0/12,fd00:10:96::/112"],
    "include-inbound-ports": ["-b", "8080,9090", "-d", "15090"],
    "exclude-inbound-ports": ["-b", "*", "-d", "15090,15021,15020,22"],
    "no-inbound": ["-b", ""],
    "no-outbound": ["-i", ""],
    "include-outbound-ports": ["-i", "", "-q", "5432,6379"],
    "exclude-outbound-ports": ["-o", "25,3306"],
    "kube-virt-interfaces-cidrs": ["-k", "eth1,eth2", "-i", "10.0.0.0/8,fd00::/8"],
    "kube-virt-interfaces-wildcard": ["-k", "eth1", "-b", ""],
    "exclude-interfaces": ["-c", "eth1,net1"],
    "tproxy": ["-m", "TPROXY", "-d", "15090,15021,15020"],
    "tproxy-inbound-ports": ["-m", "TPROXY", "-b", "8080,9090", "-t", "1500", "-r", "150"],
    "tproxy-no-inbound": ["-m", "TPROXY", "-b", ""],
    "uid-gid": ["-u", "1337,1500", "-g", "2000"],
    "loopback-included": ["-i", "127.0.0.0/8,10.0.0.0/8"],
    "custom-capture-ports": ["-p", "16001", "-z", "16006"],
    "while-proxy-down-refuse": ["--while-proxy-down", "refuse"],
    "messy-lists": ["-d", " 15090, ,15021,15090,", "-x", "10.1.2.3/8,10.0.0.0/8"],
}


def dry_run(argv: list[str]) -> str:
    result = CliRunner().invoke(iptables, ["--dry-run", *argv])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("case", sorted(CASES))
def test_dry_run_matches_golden(case: str) -> None:
    argv = CASES[case]
    actual = f"# sidemesh iptables {shlex.join(argv)}".rstrip() + "\n" + dry_run(argv)
    path = GOLDEN / f"{case}.rules"
    if UPDATE:
        update_golden(path, actual)
    assert actual == path.read_text()


def test_every_golden_file_has_a_case() -> None:
    assert {path.stem for path in GOLDEN.glob("*.rules")} == set(CASES)


def test_injector_defaults_equal_flag_defaults() -> None:
    assert dry_run(INJECTOR_DEFAULT) == dry_run(["-d", "15090,15021,15020"])


@pytest.mark.parametrize("case", sorted(CASES))
def test_rules_only_touch_our_chains(case: str) -> None:
    """Built-in chains get jumps to our chains, nothing else; every rule is in our chains."""
    dry_run(CASES[case])  # the flags are valid
    config = _config_from_argv(CASES[case])
    for family in build_capture_rules(config).families:
        for table in family.tables:
            assert set(table.chains) <= OUR_CHAINS
            assert all(rule.chain in table.chains for rule in table.rules)
            assert all(rule.chain in ("PREROUTING", "INPUT", "OUTPUT") for rule in table.jumps)
            assert all(rule.spec.split()[-1] in table.chains for rule in table.jumps)


def test_fresh_restore_input_is_the_transaction_against_empty_tables() -> None:
    for family in build_capture_rules(parse_capture_config(mode="TPROXY")).families:
        assert family.restore_input() == plan_transaction(family.tables, {})


def test_cidrs_go_to_their_own_family() -> None:
    rules = build_capture_rules(parse_capture_config(exclude_outbound_ranges="10.0.0.0/8,fd00::/8"))
    assert "-d 10.0.0.0/8 -j RETURN" in rules.ipv4.restore_input()
    assert "fd00::/8" not in rules.ipv4.restore_input()
    assert "-d fd00::/8 -j RETURN" in rules.ipv6.restore_input()
    assert "10.0.0.0/8" not in rules.ipv6.restore_input()


def test_gid_defaults_to_the_uid_list() -> None:
    config = parse_capture_config(proxy_uid="1337,1400")
    assert config.proxy_gids == (1337, 1400)
    assert parse_capture_config(proxy_uid="1337", proxy_gid="2000").proxy_gids == (2000,)


@pytest.mark.parametrize(
    ("argv", "flag", "value"),
    [
        (["-i", "10.0.0.0/33"], "-i/--istio-service-cidr", "10.0.0.0/33"),
        (["-i", "10.0.0.0/8,*"], "-i/--istio-service-cidr", "*"),
        (["-x", "not-a-cidr"], "-x/--istio-service-exclude-cidr", "not-a-cidr"),
        (["-x", "*"], "-x/--istio-service-exclude-cidr", "*"),
        (["-x", "fd00::/129"], "-x/--istio-service-exclude-cidr", "fd00::/129"),
        (["-b", "8080,70000"], "-b/--istio-inbound-ports", "70000"),
        (["-d", "15090,abc"], "-d/--istio-local-exclude-ports", "abc"),
        (["-q", "80-90"], "-q/--istio-include-outbound-ports", "80-90"),
        (["-o", "0"], "-o/--istio-exclude-outbound-ports", "0"),
        (["-p", "65536"], "-p/--proxy-port", "65536"),
        (["-z", "+15006"], "-z/--inbound-capture-port", "+15006"),
        (["-m", "NONE"], "-m/--istio-inbound-interception-mode", "NONE"),
        (["-m", "tproxyy"], "-m/--istio-inbound-interception-mode", "tproxyy"),
        (["-u", "istio-proxy"], "-u/--proxy-uid", "istio-proxy"),
        (["-u", ""], "-u/--proxy-uid", ""),
        (["-g", "-1"], "-g/--proxy-gid", "-1"),
        (["-t", "0"], "-t/--istio-inbound-tproxy-mark", "0"),
        (["-r", "254"], "-r/--istio-inbound-tproxy-route-table", "254"),
        (["-c", "eth0 -j ACCEPT"], "-c/--istio-exclude-interfaces", "eth0 -j ACCEPT"),
        (["-k", "a-very-long-interface"], "-k/--kube-virt-interfaces", "a-very-long-interface"),
    ],
)
def test_invalid_values_are_rejected_naming_the_flag(
    argv: list[str], flag: str, value: str
) -> None:
    result = CliRunner().invoke(iptables, ["--dry-run", *argv])
    assert result.exit_code == 2
    assert flag in result.stderr
    assert repr(value) in result.stderr
    assert "###" not in result.stdout  # nothing printed as if it were valid


def test_tproxy_mode_is_case_insensitive() -> None:
    assert dry_run(["-m", "tproxy"]) == dry_run(["-m", "TPROXY"])


def _config_from_argv(argv: list[str]) -> CaptureConfig:
    """Parse argv the way the CLI does, to inspect the resulting CaptureConfig."""
    params = iptables.make_context("iptables", list(argv)).params
    flags = {name: value for name, value in params.items() if name not in ("dry_run", "cleanup")}
    return parse_capture_config(**flags)
