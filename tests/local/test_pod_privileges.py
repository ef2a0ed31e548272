"""What a container may do, from its securityContext: the decision as a truth table
(`local/privileges.py`); `test_pod_isolation.py` proves it in running pods."""

from __future__ import annotations

from typing import Any

import pytest

from sidemesh.local.privileges import (
    CAPABILITIES,
    DEFAULT_CAPABILITIES,
    DOCKER_DEFAULT,
    PrivilegeError,
    container_privileges,
)

NETWORK = frozenset({"NET_ADMIN", "NET_RAW"})
ISTIO_INIT = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
    "privileged": False,
    "runAsGroup": 0,
    "runAsNonRoot": False,
    "runAsUser": 0,
}
ISTIO_PROXY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": 1337,
    "runAsGroup": 1337,
}

# securityContext -> (capabilities kept, no_new_privs)
TABLE: list[tuple[str, dict[str, Any], frozenset[str], bool]] = [
    ("no securityContext: Docker's set less MKNOD", {}, DEFAULT_CAPABILITIES, True),
    ("istio-init as injected", ISTIO_INIT, NETWORK, True),
    ("istio-proxy as injected", ISTIO_PROXY, frozenset(), True),
    ("drop one", {"capabilities": {"drop": ["NET_RAW"]}}, DEFAULT_CAPABILITIES - {"NET_RAW"}, True),
    ("add one", {"capabilities": {"add": ["SYS_TIME"]}}, DEFAULT_CAPABILITIES | {"SYS_TIME"}, True),
    ("CAP_ prefix, any case", {"capabilities": {"add": ["cap_net_admin"], "drop": ["all"]}},
     frozenset({"NET_ADMIN"}), True),
    ("add ALL, drop one", {"capabilities": {"add": ["ALL"], "drop": ["SYS_ADMIN"]}},
     frozenset(CAPABILITIES) - {"SYS_ADMIN"}, True),
    ("added and dropped: dropped", {"capabilities": {"add": ["NET_ADMIN"], "drop": ["NET_ADMIN"]}},
     DEFAULT_CAPABILITIES, True),
    ("escalation allowed", {"allowPrivilegeEscalation": True}, DEFAULT_CAPABILITIES, False),
    ("privileged keeps all", {"privileged": True}, frozenset(CAPABILITIES), False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("security", "kept", "no_new_privs"),
    [case[1:] for case in TABLE],
    ids=[case[0] for case in TABLE],
)
def test_capabilities_and_no_new_privs(
    security: dict[str, Any], kept: frozenset[str], no_new_privs: bool
) -> None:
    privileges = container_privileges(security)
    assert privileges.capabilities == kept
    assert privileges.no_new_privileges is no_new_privs
    assert privileges.capability_numbers == sorted(CAPABILITIES[name] for name in kept)


def test_the_default_set_is_dockers_without_mknod() -> None:
    """No device cgroup here: a node made in a writable volume would open the host's disks."""
    removed = DOCKER_DEFAULT - DEFAULT_CAPABILITIES
    assert removed == {"MKNOD"}
    assert len(DOCKER_DEFAULT) == 14


def test_capability_numbers_are_linuxs() -> None:
    assert (CAPABILITIES["CHOWN"], CAPABILITIES["NET_ADMIN"], CAPABILITIES["NET_RAW"]) == (
        0,
        12,
        13,
    )
    assert (CAPABILITIES["SYS_ADMIN"], CAPABILITIES["CHECKPOINT_RESTORE"]) == (21, 40)


@pytest.mark.parametrize(
    ("security", "reason"),
    [
        ({"runAsNonRoot": True}, "runAsNonRoot and image will run as root (non-numeric user)"),
        ({"runAsNonRoot": True, "runAsUser": 0}, "will run as root (runAsUser 0)"),
        ({"capabilities": {"add": ["NET_WIZARD"]}}, "unknown capability 'NET_WIZARD'"),
        ({"capabilities": {"drop": ["ALL", "TYPO"]}}, "unknown capability 'TYPO'"),
        ({"privileged": True, "allowPrivilegeEscalation": False}, "cannot set"),
        ({"runAsUser": "0"}, "runAsUser '0': must be an integer from 0 to 2147483647"),
        ({"runAsGroup": -1}, "runAsGroup -1: must be an integer"),
        ({"fsGroup": True}, "fsGroup True: must be an integer"),
        ({"supplementalGroups": [1, 2**31]}, "supplementalGroups 2147483648: must be"),
    ],
)
def test_refusals_say_why(security: dict[str, Any], reason: str) -> None:
    with pytest.raises(PrivilegeError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        container_privileges(security)


def test_run_as_non_root_with_a_user_is_fine() -> None:
    assert container_privileges({"runAsNonRoot": True, "runAsUser": 1000}).capabilities
