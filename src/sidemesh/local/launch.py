"""Start one container process inside its pod: `python -m sidemesh.local.launch SPEC.json`.

It runs under `ip netns exec <pod netns>`, which has already put it in the pod's network
namespace and in a private mount namespace with the pod's /etc/hosts and /etc/resolv.conf. It
then, still as root:

1. gives the container its own UTS namespace with the pod's name as hostname;
2. makes the Python installation reachable for a non-root user when it lives under a directory
   only root may enter (a venv under /root, say): a tmpfs over that directory holding bind
   mounts of just the needed paths, so the rest of it stays hidden;
3. bind-mounts the pod's volumes at their `mountPath`s (read-only where asked) — the mounts
   exist only in this process's mount namespace, so the host never sees them. Neither does it
   see their mount points: a `mountPath` missing on the host (/var/run/secrets/tokens, say) is
   made in a private tmpfs laid over its nearest existing directory, which shows that
   directory's entries through bind mounts. (Made on the host, such directories were shared
   by every pod and runtime: removing one empty "leftover" silently unmounted the volume of
   every container using it, e.g. a sidecar's token, leaving its pod 1/2 for good.) Only a
   mount point right under / is made on the host (a tmpfs over / would not be this process's
   root), by the daemon, which records it for `sidemesh local down`;
4. drops to the container's uid/gid and groups, changes directory, and execs the command.

Standard library only, and nothing else is imported: it is on every container's start path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
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


def shadow(directory: str) -> None:
    """Lay a tmpfs over `directory` (in this mount namespace) that shows the same entries:
    directories and files as bind mounts of the originals, symlinks as copies. What is then
    created in it stays private."""
    before = os.stat(directory)
    entries = os.listdir(directory)
    original = os.open(directory, os.O_PATH | os.O_DIRECTORY)
    try:
        mode = f"mode={stat.S_IMODE(before.st_mode):o},uid={before.st_uid},gid={before.st_gid}"
        _mount("tmpfs", directory, "tmpfs", 0, mode)
        for name in entries:
            old, new = f"/proc/self/fd/{original}/{name}", os.path.join(directory, name)
            try:
                info = os.lstat(old)
                if stat.S_ISLNK(info.st_mode):
                    os.symlink(os.readlink(old), new)
                    continue
            except FileNotFoundError:
                continue  # gone since listed
            if stat.S_ISDIR(info.st_mode):
                os.mkdir(new, 0o755)
            else:
                os.close(os.open(new, os.O_CREAT | os.O_WRONLY, 0o600))
            _mount(old, new, None, MS_BIND | MS_REC, None)
    finally:
        os.close(original)


def private_mount_point(target: str, *, is_dir: bool, private: set[str]) -> None:
    """Make `target` exist without creating anything on the host. `private` holds the
    directories known to be ours (shadows and what was made in them); it grows."""
    if not os.path.isabs(target):
        raise OSError(errno.EINVAL, f"mountPath {target!r} is not an absolute path")
    if os.path.lexists(target):
        return
    missing = [target]
    parent = os.path.dirname(target)
    while not os.path.exists(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    parent = os.path.realpath(parent)
    if parent == "/":
        _host_mount_point(target, is_dir=is_dir)
        return
    if parent not in private:
        shadow(parent)
        private.add(parent)
    for path in reversed(missing):  # the outermost first, below the (now private) parent
        created = os.path.join(parent, os.path.basename(path))
        if path != target or is_dir:
            os.mkdir(created, 0o755)
            private.add(created)
        else:
            os.close(os.open(created, os.O_CREAT | os.O_WRONLY, 0o644))
        parent = created


def _host_mount_point(target: str, *, is_dir: bool) -> None:
    if is_dir:
        os.makedirs(target, mode=0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target) or "/", mode=0o755, exist_ok=True)
        with open(target, "a", encoding="utf-8"):
            pass


def mount_volumes(mounts: list[dict[str, Any]]) -> None:
    # Every source is opened before the first mount: a volume mounted over a path that holds
    # a later volume's source (an emptyDir at /tmp, with the state directory under /tmp) would
    # otherwise hide that source.
    sources = [os.open(str(m["source"]), os.O_PATH | os.O_CLOEXEC) for m in mounts]
    try:
        private: set[str] = set()
        for mount, descriptor in zip(mounts, sources, strict=True):
            source, target = f"/proc/self/fd/{descriptor}", str(mount["target"])
            is_dir = stat.S_ISDIR(os.fstat(descriptor).st_mode)
            private_mount_point(target, is_dir=is_dir, private=private)
            _mount(source, target, None, MS_BIND | MS_REC, None)
            if mount.get("readonly"):
                _mount(target, target, None, MS_BIND | MS_REC | MS_REMOUNT | MS_RDONLY, None)
    finally:
        for descriptor in sources:
            os.close(descriptor)


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
