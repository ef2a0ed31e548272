"""What a container may do, from its securityContext (merged over the pod's): pure.

Capabilities, as a container runtime grants them:

* `privileged: true` keeps every capability (and the host's /dev), as on Kubernetes;
* otherwise the container starts from the default set, minus `capabilities.drop` (`ALL`
  empties it), plus `capabilities.add`. The default set is Docker's and containerd's, less
  MKNOD: there is no device cgroup here, so a device node made in a writable volume would
  open the host's disks;
* the kept set bounds the container for good (bounding set). A root container has exactly it
  effective; a non-root user, as with runc, keeps it only in the bounding set (no ambient
  capabilities): the injected `istio-init` (root, NET_ADMIN + NET_RAW) can write its iptables
  rules, `istio-proxy` (uid 1337, drop ALL) and an app container cannot.

no_new_privs (no setuid binary, no file capability gains anything): on unless the container is
privileged or says `allowPrivilegeEscalation: true`. Kubernetes leaves it off by default; here
the host's own setuid binaries are within every container's reach, so the default is the safe
one, and a container that needs them says so.

runAsNonRoot with a root (or unset) runAsUser is refused, as the kubelet refuses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Linux's capabilities in number order (linux/capability.h), and Docker's default set.
_IN_ORDER = """
    CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP
    LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER
    SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE
    SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP
    MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF
    CHECKPOINT_RESTORE
"""
_DOCKER = """
    CHOWN DAC_OVERRIDE FSETID FOWNER MKNOD NET_RAW SETGID SETUID SETFCAP SETPCAP
    NET_BIND_SERVICE SYS_CHROOT KILL AUDIT_WRITE
"""
CAPABILITIES = {name: number for number, name in enumerate(_IN_ORDER.split())}
DOCKER_DEFAULT = frozenset(_DOCKER.split())
DEFAULT_CAPABILITIES = DOCKER_DEFAULT - {"MKNOD"}


MAX_ID = 2**31 - 1  # Kubernetes' bound for a uid or gid


def is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID


class PrivilegeError(ValueError):
    """The container cannot start as asked (CreateContainerConfigError); says why."""


@dataclass(frozen=True)
class Privileges:
    privileged: bool
    capabilities: frozenset[str]  # kept (bounding set; effective for root)
    no_new_privileges: bool

    @property
    def capability_numbers(self) -> list[int]:
        return sorted(CAPABILITIES[name] for name in self.capabilities)


def capability_name(raw: object) -> str:
    """`NET_ADMIN`, `net_admin` and `CAP_NET_ADMIN` all name NET_ADMIN (as containerd reads
    them); an unknown name is refused."""
    name = str(raw).upper()
    name = name.removeprefix("CAP_")
    if name != "ALL" and name not in CAPABILITIES:
        raise PrivilegeError(f"unknown capability {str(raw)!r}")
    return name


def container_privileges(security: Mapping[str, Any]) -> Privileges:
    """`security`: the container's securityContext merged over the pod's."""
    for field in ("runAsUser", "runAsGroup", "fsGroup"):
        value = security.get(field)
        if value is not None and not is_id(value):
            raise PrivilegeError(f"{field} {value!r}: must be an integer from 0 to {MAX_ID}")
    for value in security.get("supplementalGroups") or []:
        if not is_id(value):
            raise PrivilegeError(
                f"supplementalGroups {value!r}: must be an integer from 0 to {MAX_ID}"
            )
    uid = security.get("runAsUser")
    if security.get("runAsNonRoot") is True and (uid is None or uid == 0):
        reason = "non-numeric user" if uid is None else "runAsUser 0"
        raise PrivilegeError(
            f"container has runAsNonRoot and image will run as root ({reason}): "
            "set runAsUser to a non-zero uid"
        )
    if security.get("privileged") is True:
        if security.get("allowPrivilegeEscalation") is False:
            raise PrivilegeError(
                "cannot set allowPrivilegeEscalation to false and privileged to true"
            )
        return Privileges(
            privileged=True, capabilities=frozenset(CAPABILITIES), no_new_privileges=False
        )
    requested = security.get("capabilities") or {}
    dropped = {capability_name(c) for c in requested.get("drop") or []}
    added = {capability_name(c) for c in requested.get("add") or []}
    # containerd's order: ALL added, ALL dropped, then each one added, then each one dropped
    # (add [ALL] drop [CHOWN]: all but CHOWN; drop [ALL] add [NET_ADMIN]: NET_ADMIN alone).
    kept = set(CAPABILITIES) if "ALL" in added else set(DEFAULT_CAPABILITIES)
    if "ALL" in dropped:
        kept = set()
    kept = (kept | (added - {"ALL"})) - (dropped - {"ALL"})
    return Privileges(
        privileged=False,
        capabilities=frozenset(kept),
        no_new_privileges=security.get("allowPrivilegeEscalation") is not True,
    )
