"""`launch` as its caller sees it: the container's command runs as pid 2 of its own PID
namespace (under an init), yet the launcher ends as the command ends (same exit status, same
signal), passes stop signals on, and when the launcher is killed the container dies with it:
nothing is left running outside the runtime's sight."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="namespaces and mounts need root")

GIVE_UP_SECONDS = 60.0
SOURCE_ROOT = str(Path(__file__).resolve().parents[2] / "src")


def wait_for(what: str, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + GIVE_UP_SECONDS
    while not done():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def launch(tmp_path: Path, argv: list[str], **spec: Any) -> subprocess.Popen[bytes]:
    """The launcher as `ip netns exec` runs it: root, in a private mount namespace."""
    path = tmp_path / f"spec-{uuid.uuid4().hex[:8]}.json"
    full = {
        "argv": argv,
        "env": {"PATH": "/usr/bin:/bin"},
        "uid": None,
        "gid": None,
        "groups": [],
        "workdir": "/",
        "hostname": "sup",
        "mounts": [],
        "expose": [],
        "privileged": False,
        "capabilities": [],
        "no_new_privs": True,
        "hide": [],
        **spec,
    }
    path.write_text(json.dumps(full))
    return subprocess.Popen(
        ["unshare", "-m", "--propagation", "slave", sys.executable, "-m",
         "sidemesh.local.launch", str(path)],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": SOURCE_ROOT},
        stdout=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip


def running(marker: str) -> bool:
    """Is a process with `marker` in its argv alive (not a zombie)?"""
    for entry in Path("/proc").iterdir():
        try:
            if marker.encode() in (entry / "cmdline").read_bytes().split(b"\0"):
                state = (entry / "stat").read_text().rsplit(") ", 1)[1][0]
                if state != "Z":
                    return True
        except OSError:
            continue
    return False


SLEEPER = "import sys, time; print('up', flush=True); time.sleep(600)"


def test_the_exit_status_is_the_commands(tmp_path: Path) -> None:
    process = launch(tmp_path, [sys.executable, "-c", "raise SystemExit(3)"])
    assert process.wait(GIVE_UP_SECONDS) == 3


def test_the_command_is_pid_2_under_its_own_init(tmp_path: Path) -> None:
    probe = "import os; print(os.getpid(), os.getppid())"
    process = launch(tmp_path, [sys.executable, "-c", probe])
    output, _ = process.communicate(timeout=GIVE_UP_SECONDS)
    assert process.returncode == 0
    assert output.decode().split()[:2] == ["2", "1"]


def test_a_stop_signal_reaches_the_command_and_the_launcher_ends_by_it(tmp_path: Path) -> None:
    process = launch(tmp_path, [sys.executable, "-c", SLEEPER])
    assert process.stdout is not None
    assert process.stdout.readline() == b"up\n"
    os.killpg(process.pid, signal.SIGTERM)
    assert process.wait(GIVE_UP_SECONDS) == -signal.SIGTERM


def test_a_killed_launcher_takes_the_container_with_it(tmp_path: Path) -> None:
    marker = f"sidemesh-test-{uuid.uuid4().hex}"
    process = launch(tmp_path, [sys.executable, "-c", SLEEPER, marker])
    assert process.stdout is not None
    assert process.stdout.readline() == b"up\n"
    assert running(marker)
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait(GIVE_UP_SECONDS) == -signal.SIGKILL
    wait_for("the container's command to die with its launcher", lambda: not running(marker))


def test_a_setup_failure_is_reported_not_run(tmp_path: Path) -> None:
    mounts = [{"source": str(tmp_path / "missing"), "target": "/mnt/x"}]
    process = launch(tmp_path, [sys.executable, "-c", "print('ran')"], mounts=mounts)
    output, _ = process.communicate(timeout=GIVE_UP_SECONDS)
    assert process.returncode == 128
    assert b"ran" not in output
