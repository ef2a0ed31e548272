"""Start one container process inside its pod: `python -m sidemesh.local.launch SPEC.json`.

It runs under `ip netns exec <pod netns>`, which has already put it in the pod's network
namespace and in a private mount namespace with the pod's /etc/hosts and /etc/resolv.conf. It
then, still as root:

1. gives the container its own UTS namespace with the pod's name as hostname;
2. forks the container's init into a new PID namespace (its own mount namespace too) and stays
   outside as its supervisor: it passes stop signals on to the container's process group and
   ends as the command ended (its exit status, or killed by the same signal), so whoever started
   it sees the command. If the supervisor is killed, the init dies with it and with the init
   everything in the container. On a terminal it hands the terminal to the container's group;
3. the init, pid 1 of the container, opens every volume's source (before anything below can
   hide it), then raises the walls (`confine`): a /proc of its own, a private /dev, the
   runtime's state directory and the host's /root hidden. A command run in the container
   (`exec`, exec probes) gets a PID namespace of its own too: it does not see the container's
   processes;
4. makes the Python installation reachable for a non-root user when it lives under a directory
   only root may enter (a venv under /root, say): a tmpfs over that directory holding bind
   mounts of just the needed paths, so the rest of it stays hidden (from root containers too);
5. bind-mounts the pod's volumes at their `mountPath`s (read-only where asked) — the mounts
   exist only in this container's mount namespace, so the host never sees them. Neither does it
   see their mount points: a `mountPath` missing on the host (/var/run/secrets/tokens, say) is
   made in a private tmpfs laid over its nearest existing directory, which shows that
   directory's entries through bind mounts. (Made on the host, such directories were shared
   by every pod and runtime: removing one empty "leftover" silently unmounted the volume of
   every container using it, e.g. a sidecar's token, leaving its pod 1/2 for good.) Only a
   mount point right under / is made on the host (a tmpfs over / would not be this process's
   root), by the daemon, which records it for `sidemesh local down`;
6. forks the command: cuts its bounding set to the capabilities it keeps, drops to the
   container's uid/gid and groups (a root container keeps exactly those capabilities), sets
   no_new_privs where asked, changes directory and execs. The init drops every capability of
   its own, reaps orphans, and reports the command's end to the supervisor through a pipe.

Standard library only, and nothing but `confine` (the same) is imported: it is on every
container's start path.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import stat
import sys
from collections.abc import Callable
from functools import partial
from types import FrameType
from typing import Any, NoReturn

from sidemesh.local import confine
from sidemesh.local.confine import MS_BIND, MS_RDONLY, MS_REC, MS_REMOUNT

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
SETUP_FAILED = 128
# Passed on to the container by its supervisor (SIGKILL cannot be: the init dies with it).
FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
)

_mount = confine.mount


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


def open_sources(mounts: list[dict[str, Any]]) -> list[int]:
    """Every volume's source, opened before the first mount: a volume mounted over a path that
    holds a later volume's source (an emptyDir at /tmp, with the state directory under /tmp)
    would otherwise hide that source, and so would the tmpfs over the state directory."""
    return [os.open(str(m["source"]), os.O_PATH | os.O_CLOEXEC) for m in mounts]


def mount_volumes(mounts: list[dict[str, Any]], sources: list[int] | None = None) -> None:
    if sources is None:
        sources = open_sources(mounts)
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
    """The container's user: supplementary groups (fsGroup, supplementalGroups) and its
    runAsGroup apply to a root container too; runAsUser without runAsGroup means group 0."""
    os.setgroups(groups)
    if gid is not None or uid is not None:
        primary = gid if gid is not None else 0
        os.setresgid(primary, primary, primary)
    if uid is not None:
        os.setresuid(uid, uid, uid)


def _exec_command(spec: dict[str, Any], last_capability: int) -> NoReturn:
    """The container's command (pid 2 of its PID namespace): privileges, user, exec."""
    command: list[str] = spec["argv"]
    uid = spec.get("uid")
    try:
        privileged = spec.get("privileged") is True
        keep = {int(c) for c in spec.get("capabilities") or []}  # missing: none (fail closed)
        if not privileged:
            confine.limit_bounding_set(keep, last_capability)
        become(uid, spec.get("gid"), spec.get("groups") or [])
        if not privileged and uid in (None, 0):
            confine.set_capabilities(keep)
        if spec.get("no_new_privs"):
            confine.forbid_new_privileges()
        os.chdir(spec.get("workdir") or "/")
    except OSError as exc:
        print(f"sidemesh local: cannot set up the container: {exc}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(SETUP_FAILED)
    sys.stdout.flush()
    try:
        os.execvpe(command[0], command, spec["env"])
    except OSError as exc:
        print(f'exec: "{command[0]}": {exc.strerror}', file=sys.stderr)
        sys.stderr.flush()
        os._exit(127 if isinstance(exc, FileNotFoundError) else 126)


class HeldSignals:
    """Stop signals that reach a container's init before its command exists.

    A PID namespace's init never gets a signal it has no handler for (the kernel drops it), so
    a SIGTERM arriving while the walls go up would be lost and the command, started just after,
    would run on until SIGKILL. The init records them instead and passes them on to the command
    once it is forked. Signals stay blocked across each fork, so none slips between the two
    processes' handlers: the command's pending ones meet its default action when it unblocks."""

    def __init__(self) -> None:
        self.received: list[int] = []

    def record(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)

    def hold(self) -> None:
        for signum in FORWARDED:
            signal.signal(signum, self.record)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)

    def fork_command(self, run: Callable[[], NoReturn]) -> int:
        """Fork `run` with the default stop actions; pass on what was held; from then on the
        process group's signals reach the command itself, and the init ignores them."""
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
        pid = os.fork()
        if pid == 0:
            for signum in FORWARDED:
                signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
            run()
        for signum in FORWARDED:
            signal.signal(signum, _ignore)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
        for held in self.received:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, held)
        self.received.clear()
        return pid


def _container_init(spec: dict[str, Any], report: int) -> NoReturn:
    """Pid 1 of the container: raise the walls, start the command, reap, report its end."""
    held = HeldSignals()
    held.hold()  # the supervisor forked it with the stop signals blocked
    try:
        os.setpgid(0, 0)
        confine.die_with_parent(signal.SIGKILL)
        last_capability = confine.last_capability()  # the host's /proc, still
        confine.unshare(CLONE_NEWNS, "unshare(CLONE_NEWNS)")
        sources = open_sources(spec.get("mounts") or [])  # in this namespace: bind-mountable
        privileged = spec.get("privileged") is True
        confine.private_proc(privileged=privileged)
        if not privileged:
            confine.private_dev()
        exposed = [str(p) for p in spec.get("expose") or []]
        expose(exposed)
        confine.hide([str(p) for p in spec.get("hide") or []], shown=exposed)
        mount_volumes(spec.get("mounts") or [], sources)
    except OSError as exc:
        print(f"sidemesh local: cannot set up the container: {exc}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(SETUP_FAILED)
    sys.stdout.flush()
    command = held.fork_command(partial(_exec_command, spec, last_capability))
    status = SETUP_FAILED << 8
    try:
        confine.set_capabilities(set())
        confine.not_dumpable()
        while True:
            pid, waited = os.waitpid(-1, 0)
            if pid == command:
                status = waited
                break
    except (OSError, ChildProcessError):
        pass
    os.write(report, str(status).encode("ascii"))
    os._exit(0)


def _ignore(signum: int, frame: FrameType | None) -> None:
    pass


def _supervise(spec: dict[str, Any]) -> int:
    """Fork the container's init into a new PID namespace; pass signals on; its command's end."""
    pending: list[int] = []
    child: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        if not child:
            pending.append(signum)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child[0], signum)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    report_read, report_write = os.pipe()
    confine.unshare(CLONE_NEWPID, "unshare(CLONE_NEWPID)")
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)  # until the init holds its own
    pid = os.fork()
    if pid == 0:
        os.close(report_read)
        _container_init(spec, report_write)
    os.close(report_write)
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)
    on_terminal = False
    with contextlib.suppress(OSError):
        on_terminal = os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
    if on_terminal:
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        with contextlib.suppress(OSError):
            os.tcsetpgrp(0, pid)
    child.append(pid)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    for early in pending:
        forward(early, None)
    _, waited = os.waitpid(pid, 0)
    if on_terminal:
        with contextlib.suppress(OSError):
            os.tcsetpgrp(0, os.getpgrp())
    with os.fdopen(report_read, "rb") as report:
        text = report.read().decode("ascii", "replace").strip()
    status = int(text) if text.isdigit() else waited
    code = os.waitstatus_to_exitcode(status)
    if code < 0:  # end as the command did: killed by the same signal
        sys.stdout.flush()
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code
    return code


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m sidemesh.local.launch SPEC.json", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as file:
        spec = json.load(file)
    os.umask(0o022)
    try:
        if spec.get("hostname"):
            confine.set_hostname(spec["hostname"])
    except OSError as exc:
        print(f"sidemesh local: cannot set up the container: {exc}", file=sys.stderr)
        return SETUP_FAILED
    try:
        return _supervise(spec)
    except OSError as exc:
        print(f"sidemesh local: cannot start the container: {exc}", file=sys.stderr)
        return SETUP_FAILED


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
