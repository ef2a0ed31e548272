"""Start one container process inside its pod: `python -m sidemesh.local.launch SPEC.json`.

It runs under `ip netns exec <pod netns>`, which has already put it in the pod's network
namespace and in a private mount namespace with the pod's /etc/hosts and /etc/resolv.conf. It
then, still as root:

1. gives the container its own UTS namespace with the pod's name as hostname;
2. makes the Python installation reachable for a non-root user when it lives under a directory
   only root may enter (a venv under /root, say): a tmpfs over that directory holding bind
   mounts of just the needed paths, so the rest of it stays hidden;
3. bind-mounts the pod's volumes at their `mountPath`s (read-only where asked) — the mounts
   exist only in this process's mount namespace, so the host never sees them;
4. drops to the container's uid/gid and groups, changes directory, and execs the command.

Standard library only, and nothing else is imported: it is on every container's start path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import stat
import sys
from typing import Any

CLONE_NEWUTS = 0x04000000
MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    _check(
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {source} on {target}",
    )


def _set_hostname(name: str) -> None:
    _check(_libc.unshare(CLONE_NEWUTS), "unshare(CLONE_NEWUTS)")
    raw = name.encode()[:64]
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


def _closed_ancestor(path: str) -> str | None:
    """The first directory on the way to `path` that others may not enter, if any."""
    current = "/"
    for part in [p for p in path.split("/") if p]:
        current = os.path.join(current, part)
        try:
            mode = os.stat(current).st_mode
        except OSError:
            return None
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return current
    return None


def expose(paths: list[str]) -> None:
    """Make `paths` reachable for any uid by covering their closed ancestor with a tmpfs that
    holds bind mounts of exactly those paths."""
    groups: dict[str, list[str]] = {}
    for path in paths:
        ancestor = _closed_ancestor(path)
        if ancestor is not None and ancestor != path:
            groups.setdefault(ancestor, []).append(path)
    for ancestor, members in groups.items():
        descriptors = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in members}
        _mount("tmpfs", ancestor, "tmpfs", 0, "mode=755")
        for path, descriptor in descriptors.items():
            os.makedirs(path, mode=0o755, exist_ok=True)
            _mount(f"/proc/self/fd/{descriptor}", path, None, MS_BIND | MS_REC, None)
            os.close(descriptor)


def mount_volumes(mounts: list[dict[str, Any]]) -> None:
    for mount in mounts:
        source, target = str(mount["source"]), str(mount["target"])
        if os.path.isdir(source):
            os.makedirs(target, mode=0o755, exist_ok=True)
        elif not os.path.exists(target):
            os.makedirs(os.path.dirname(target) or "/", mode=0o755, exist_ok=True)
            with open(target, "a", encoding="utf-8"):
                pass
        _mount(source, target, None, MS_BIND | MS_REC, None)
        if mount.get("readonly"):
            _mount(source, target, None, MS_BIND | MS_REC | MS_REMOUNT | MS_RDONLY, None)


def become(uid: int | None, gid: int | None, groups: list[int]) -> None:
    if uid is None:
        return
    os.setgroups(groups)
    primary = gid if gid is not None else 0
    os.setresgid(primary, primary, primary)
    os.setresuid(uid, uid, uid)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m sidemesh.local.launch SPEC.json", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as file:
        spec = json.load(file)
    os.umask(0o022)
    command: list[str] = spec["argv"]
    try:
        if spec.get("hostname"):
            _set_hostname(spec["hostname"])
        uid = spec.get("uid")
        if uid not in (None, 0):
            expose(spec.get("expose") or [])
        mount_volumes(spec.get("mounts") or [])
        become(uid, spec.get("gid"), spec.get("groups") or [])
        os.chdir(spec.get("workdir") or "/")
    except OSError as exc:
        print(f"sidemesh local: cannot set up the container: {exc}", file=sys.stderr)
        return 128
    sys.stdout.flush()
    try:
        os.execvpe(command[0], command, spec["env"])
    except OSError as exc:
        print(f'exec: "{command[0]}": {exc.strerror}', file=sys.stderr)
        return 127 if isinstance(exc, FileNotFoundError) else 126


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
