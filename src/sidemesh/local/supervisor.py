"""The CLI's side of the daemon: is it running, start it, wake it up.

"Running" means someone holds `daemon.lock` (a lock dies with its process, a pid file does
not). The daemon is started detached (its own session, output to `daemon.log`) and counted as
up once its wakeup socket answers.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import subprocess
import sys
import time

from sidemesh.local.paths import RuntimePaths

START_TIMEOUT_SECONDS = 30.0


class DaemonError(RuntimeError):
    """The daemon could not be started; the message includes the end of its log."""


def daemon_running(paths: RuntimePaths) -> bool:
    if not paths.daemon_lock.exists():
        return False
    fd = os.open(paths.daemon_lock, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def wake(paths: RuntimePaths) -> bool:
    """Tell the daemon to look at the state now; False if nobody is listening."""
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sender.sendto(b"wake", str(paths.wakeup_socket))
    except OSError:
        return False
    finally:
        sender.close()
    return True


def _log_tail(paths: RuntimePaths, lines: int = 20) -> str:
    try:
        text = paths.daemon_log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no daemon log)"
    return "\n".join(text.splitlines()[-lines:])


def ensure_daemon(paths: RuntimePaths) -> None:
    """Start the daemon unless it runs; return once it listens."""
    if daemon_running(paths) and wake(paths):
        return
    process: subprocess.Popen[bytes] | None = None
    if not daemon_running(paths):
        with open(paths.daemon_log, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "sidemesh.local.daemon", str(paths.root)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                close_fds=True,
                cwd="/",
            )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if wake(paths):
            return
        if process is not None and process.poll() is not None and not daemon_running(paths):
            raise DaemonError(
                f"the local runtime daemon exited with status {process.returncode}:\n"
                f"{_log_tail(paths)}"
            )
        time.sleep(0.05)
    raise DaemonError(
        f"the local runtime daemon did not start within {START_TIMEOUT_SECONDS:.0f}s:"
        f"\n{_log_tail(paths)}"
    )


def daemon_pid(paths: RuntimePaths) -> int | None:
    """The daemon's pid if the pid file names a live daemon of this state directory."""
    with contextlib.suppress(OSError, ValueError):
        pid = int(paths.daemon_pid.read_text(encoding="ascii").strip())
        command = f"/proc/{pid}/cmdline"
        with open(command, "rb") as file:
            argv = file.read().split(b"\0")
        if b"sidemesh.local.daemon" in argv and str(paths.root).encode() in argv:
            return pid
    return None
