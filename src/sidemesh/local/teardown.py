"""`sidemesh local down`: remove everything the runtime made, even after a crash.

What counts as ours is decided without trusting the state file alone: every network namespace
whose name starts with this runtime's prefix (derived from the state directory, so another
runtime's namespaces never match), the daemon named by the pid file (checked against its
command line), the processes inside our namespaces, `/etc/netns/<ours>`, the host route that
refuses our pod range (found by its metric, derived from the prefix), the mount points the
state recorded, and the state directory itself. Running it again finds nothing and succeeds.

A recorded mount point that some process still mounts something on (another runtime's
container) is left alone: removing it would silently unmount that container's volume.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import time
from pathlib import Path

from sidemesh.local import network
from sidemesh.local.model import NetworkRecord
from sidemesh.local.naming import node_netns
from sidemesh.local.paths import RuntimePaths
from sidemesh.local.store import StateError, Store
from sidemesh.local.supervisor import daemon_pid

TERM_SECONDS = 5.0


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as file:
            return file.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pids = [p for p in pids if _alive(p)]
        if not pids:
            return []
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _unescape_mountinfo(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_points_in_use() -> set[str]:
    """Every mount point of every mount namespace on the host (one process's view each)."""
    seen_namespaces: set[int] = set()
    found: set[str] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            namespace = os.stat(entry / "ns" / "mnt").st_ino
            if namespace in seen_namespaces:
                continue
            lines = (entry / "mountinfo").read_text(encoding="utf-8").splitlines()
        except OSError:
            continue  # gone, or not ours to read
        seen_namespaces.add(namespace)
        found.update(_unescape_mountinfo(line.split()[4]) for line in lines if line.strip())
    return found


def _remove_host_paths(recorded: list[str]) -> int:
    """Remove recorded mount points, deepest first, only while empty and mounted on by no
    one."""
    removed = 0
    in_use = mount_points_in_use()
    for text in sorted(recorded, key=lambda p: p.count("/"), reverse=True):
        path = Path(text)
        if os.path.realpath(path) in in_use:
            continue
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
                removed += 1
            elif path.is_file() and path.stat().st_size == 0:
                path.unlink()
                removed += 1
    return removed


def down(paths: RuntimePaths, prefix: str) -> list[str]:
    """Tear the runtime down; returns what was removed (for the user)."""
    report: list[str] = []
    recorded: list[str] = []
    state_netns: set[str] = set()
    ranges = NetworkRecord(prefix=prefix, node_netns=node_netns(prefix))
    with contextlib.suppress(StateError):
        state = Store(paths.root).read()
        recorded = list(state.host_paths)
        state_netns = {p.netns for p in state.pods.values() if p.netns}
        ranges = state.network
    pid = daemon_pid(paths)
    if pid is not None:
        _signal([pid], signal.SIGKILL)  # it keeps no state in memory worth saving
        _wait_gone([pid], TERM_SECONDS)
        report.append(f"stopped daemon (pid {pid})")
    ours = sorted(n for n in set(network.list_netns()) | state_netns if n.startswith(prefix + "-"))
    node = node_netns(prefix)
    pods = [n for n in ours if n != node]
    # The daemon and anything else left in the node namespace, then every pod's processes.
    if node in ours:
        leftovers = network.netns_pids(node)
        _signal(leftovers, signal.SIGKILL)
        _wait_gone(leftovers, TERM_SECONDS)
    pids = [p for n in pods for p in network.netns_pids(n)]
    _signal(pids, signal.SIGTERM)
    stubborn = _wait_gone(pids, TERM_SECONDS)
    _signal(stubborn, signal.SIGKILL)
    _wait_gone(stubborn, TERM_SECONDS)
    if pids:
        report.append(f"stopped {len(pids)} container process(es)")
    for name in [*pods, *([node] if node in ours else [])]:
        network.run(["ip", "netns", "del", name], check=False)
        network.remove_netns_etc(name)
    if ours:
        report.append(f"removed {len(ours)} network namespace(s)")
    if network.remove_host_route(ranges):
        report.append(f"removed the host route refusing {ranges.pod_cidr}")
    if network.NETNS_ETC.is_dir():
        for leftover in network.NETNS_ETC.glob(f"{prefix}-*"):
            shutil.rmtree(leftover, ignore_errors=True)
    if recorded and _remove_host_paths(recorded):
        report.append("removed volume mount points")
    if paths.root.exists():
        shutil.rmtree(paths.root, ignore_errors=True)
        report.append(f"removed {paths.root}")
    return report
