"""The walls of a container, raised by `launch` (as root) just before the command runs.

The local runtime has no images: a container runs on the host's filesystem. What keeps one pod
from another and from the runtime is what a container runtime would give it:

* its own PID namespace with a fresh /proc (another pod's processes, and with them their
  `/proc/PID/root` view of that pod's volumes, do not exist for it), /proc/sys and the
  kernel's other global knobs read-only, the files Docker masks masked;
* a /dev of its own holding only the harmless devices (null, zero, full, random, urandom,
  tty), a private /dev/pts and /dev/shm: not the host's disks;
* the runtime's state directory (the CA's key, every pod's volumes and tokens, the state file)
  and the host's /root (kubeconfigs, SSH keys) covered by an empty tmpfs of its own (only the
  Python installation stays in sight, see `launch.expose`);
* the capabilities its securityContext leaves it (`privileges`): the bounding set is cut to
  them, so neither exec nor a setuid binary can bring others back, and no_new_privs where
  the container may not escalate.

Standard library only: it is on every container's start path (see `launch`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

CLONE_NEWUTS = 0x04000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
CAPABILITY_VERSION_3 = 0x20080522

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
# What Docker and containerd hide in /proc (kernel memory, keys, timers) or make read-only
# (knobs that are global to the host, not to the pod's namespaces).
MASKED_PROC = ("kcore", "keys", "timer_list", "sched_debug", "latency_stats")
READ_ONLY_PROC = ("sys", "sysrq-trigger", "irq", "bus", "fs")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def check(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    check(
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {source} on {target}",
    )


def unshare(flags: int, what: str) -> None:
    check(_libc.unshare(flags), what)


def set_hostname(name: str) -> None:
    """A UTS namespace of its own, named `name`."""
    unshare(CLONE_NEWUTS, "unshare(CLONE_NEWUTS)")
    raw = name.encode()[:64]
    check(_libc.sethostname(raw, len(raw)), "sethostname")


def _prctl(option: int, argument: int, what: str) -> None:
    check(
        _libc.prctl(
            ctypes.c_int(option), ctypes.c_ulong(argument), ctypes.c_ulong(0), ctypes.c_ulong(0),
            ctypes.c_ulong(0),
        ),
        what,
    )  # fmt: skip


# --- filesystem -----------------------------------------------------------------------------


def _read_only(target: str) -> None:
    mount(target, target, None, MS_BIND | MS_REC, None)
    flags = MS_BIND | MS_REC | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
    mount(target, target, None, flags, None)


def private_proc(*, privileged: bool) -> None:
    """A /proc for this PID namespace (the caller is in it), with the host-wide parts shut
    unless the container is privileged."""
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    if privileged:
        return
    for name in READ_ONLY_PROC:
        if os.path.exists(f"/proc/{name}"):
            _read_only(f"/proc/{name}")
    for name in MASKED_PROC:
        if os.path.exists(f"/proc/{name}"):
            mount("/dev/null", f"/proc/{name}", None, MS_BIND, None)


def private_dev() -> None:
    """A tmpfs /dev with the harmless devices bound from the host's (needs the pod's /proc)."""
    devices = {}
    for name in DEVICES:
        try:
            devices[name] = os.open(f"/dev/{name}", os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue  # a host without it (no /dev/tty in some sandboxes)
    try:
        mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=64k")
        for name, descriptor in devices.items():
            os.close(os.open(f"/dev/{name}", os.O_CREAT | os.O_WRONLY, 0o600))
            mount(f"/proc/self/fd/{descriptor}", f"/dev/{name}", None, MS_BIND, None)
    finally:
        for descriptor in devices.values():
            os.close(descriptor)
    os.mkdir("/dev/pts", 0o755)
    mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666")
    os.symlink("pts/ptmx", "/dev/ptmx")
    os.mkdir("/dev/shm", 0o1777)
    mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777")
    os.symlink("/proc/self/fd", "/dev/fd")
    for number, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{number}", f"/dev/{name}")
    mount("/dev", "/dev", None, MS_REMOUNT | MS_NOSUID | MS_NOEXEC | MS_NODEV, "mode=755")


def hide(paths: list[str], *, shown: list[str]) -> None:
    """Cover each directory with an empty private tmpfs, unless it holds a path in `shown`
    (the Python installation every container runs from; `launch.expose` shows just that)."""
    for path in paths:
        if path == "/" or not os.path.isdir(path):
            continue
        if any(kept == path or kept.startswith(path.rstrip("/") + "/") for kept in shown):
            continue
        mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755,size=1m")


# --- capabilities and privileges ------------------------------------------------------------


class _CapabilityHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapabilityData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def last_capability() -> int:
    with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as file:
        return int(file.read())


def limit_bounding_set(keep: set[int], last: int) -> None:
    """Drop every capability but `keep` from the bounding set, for good."""
    for capability in range(last + 1):
        if capability not in keep:
            _prctl(PR_CAPBSET_DROP, capability, f"drop capability {capability}")


def set_capabilities(keep: set[int]) -> None:
    """Effective and permitted = `keep`, inheritable and ambient empty."""
    header = _CapabilityHeader(CAPABILITY_VERSION_3, 0)
    data = (_CapabilityData * 2)()
    for capability in keep:
        word, bit = divmod(capability, 32)
        data[word].effective |= 1 << bit
        data[word].permitted |= 1 << bit
    check(_libc.capset(ctypes.byref(header), data), "capset")
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, "clear ambient capabilities")


def forbid_new_privileges() -> None:
    _prctl(PR_SET_NO_NEW_PRIVS, 1, "no_new_privs")


def die_with_parent(signal_number: int) -> None:
    _prctl(PR_SET_PDEATHSIG, signal_number, "parent death signal")


def not_dumpable() -> None:
    """No /proc/PID access, no ptrace for anyone without CAP_SYS_PTRACE."""
    _prctl(PR_SET_DUMPABLE, 0, "not dumpable")
