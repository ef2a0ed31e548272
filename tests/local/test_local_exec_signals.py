"""`sidemesh local exec` stopped by a signal stops what it started (`local/attached.py`)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from netns_kit import PYTHON, SIDEMESH, Local, alive, needs_root

from sidemesh.local.attached import exit_status

GIVE_UP_SECONDS = 60.0

# The command under test: starts a grandchild, writes "its pid and the grandchild's", sleeps.
FAMILY = (
    "import os, subprocess, sys, time\n"
    "child = subprocess.Popen(['sleep', '1000'])\n"
    "with open(sys.argv[1] + '.tmp', 'w') as f: f.write(f'{os.getpid()} {child.pid}')\n"
    "os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n"
    "time.sleep(1000)\n"
)


def wait_for(what: str, done: Callable[[], bool], timeout: float = GIVE_UP_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"gave up after {timeout:.0f} s waiting for {what}"
        time.sleep(0.05)


def started_family(client: subprocess.Popen[bytes], pid_file: Path) -> list[int]:
    """The host's pids of the command and its grandchild. The command has its own PID
    namespace (it wrote the pids it sees there): found by its argv and its namespace's pid."""

    def written() -> bool:
        assert client.poll() is None, f"the client exited early: {client.returncode}"
        return pid_file.exists()

    wait_for("the command's pid file", written)
    inside = [int(p) for p in pid_file.read_text().split()]
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
        except OSError:
            continue
        namespace_pid = int(status.split("NSpid:")[1].splitlines()[0].split()[-1])
        if str(pid_file).encode() in argv and namespace_pid == inside[0]:
            pids.append(int(entry.name))
            children = (entry / "task" / entry.name / "children").read_text().split()
            pids.extend(int(c) for c in children)
    assert len(pids) == 2, pids
    assert all(alive(pid) for pid in pids)
    return pids


def test_exit_status_is_a_shells() -> None:
    assert exit_status(0) == 0
    assert exit_status(3) == 3
    assert exit_status(-signal.SIGTERM) == 128 + signal.SIGTERM


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stopped_client_stops_its_command_and_what_it_started(
    tmp_path: Path, signum: signal.Signals
) -> None:
    pid_file = tmp_path / "pids"
    runner = (
        "import sys; from sidemesh.local.attached import run_attached; "
        "raise SystemExit(run_attached(sys.argv[1:], env={'PATH': '/usr/bin:/bin'}))"
    )
    client = subprocess.Popen(
        [sys.executable, "-c", runner, sys.executable, "-c", FAMILY, str(pid_file)],
        stdin=subprocess.DEVNULL,
    )
    try:
        pids = started_family(client, pid_file)
        client.send_signal(signum)
        wait_for("the command and its child to be gone", lambda: not any(map(alive, pids)))
        assert client.wait(GIVE_UP_SECONDS) == 128 + signum
    finally:
        client.kill()
        client.wait()


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Local, str]]:
    """A runtime with one bare pod running; `down` afterwards."""
    local = Local(tmp_path_factory.mktemp("sm-exec") / "state")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "sleeper", "namespace": "default"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    "command": [PYTHON, "-c", "import time; time.sleep(3600)"],
                }
            ],
        },
    }
    path = tmp_path_factory.mktemp("manifests") / "pod.yaml"
    path.write_text(json.dumps(pod))
    try:
        local.run("apply", "-f", str(path))
        local.wait(
            "the pod running",
            lambda: any(p["status"].get("phase") == "Running" for p in local.pods("default")),
        )
        yield local, "sleeper"
    finally:
        local.run("down", check=False)


@needs_root
def test_sigterm_to_local_exec_stops_the_command_in_the_pod(
    runtime: tuple[Local, str], tmp_path: Path
) -> None:
    local, pod = runtime
    pid_file = tmp_path / "pids"
    client = subprocess.Popen(
        [*SIDEMESH, "--state-dir", str(local.state_dir), "exec", pod, "--",
         PYTHON, "-c", FAMILY, str(pid_file)],
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        pids = started_family(client, pid_file)
        client.terminate()
        wait_for("the command in the pod to be gone", lambda: not any(map(alive, pids)))
        assert client.wait(GIVE_UP_SECONDS) == 128 + signal.SIGTERM
    finally:
        client.kill()
        client.wait()
