"""A stop signal that reaches a container's init before its command exists is passed on to the
command, not lost (a PID namespace's init drops signals it has no handler for, so the pod would
stay Terminating until SIGKILL). Run in a child interpreter: the handlers are process-wide."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

SOURCE_ROOT = str(Path(__file__).resolve().parents[2] / "src")

HELD_THEN_FORKED = """
import os, signal, sys, time
from sidemesh.local.launch import HeldSignals

held = HeldSignals()
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.{name}])  # as the supervisor forks the init
held.hold()
os.kill(os.getpid(), signal.{name})  # arrives while the walls go up
assert held.received == [signal.{name}], held.received

def command():
    time.sleep(600)
    os._exit(0)

pid = held.fork_command(command)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""


def run(script: str) -> str:
    completed = subprocess.run(
        [sys.executable, "-c", script],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": SOURCE_ROOT},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.strip()


def test_a_sigterm_before_the_command_starts_ends_the_command() -> None:
    assert run(HELD_THEN_FORKED.format(name="SIGTERM")) == str(-signal.SIGTERM)


def test_every_forwarded_stop_signal_is_held_the_same_way() -> None:
    assert run(HELD_THEN_FORKED.format(name="SIGINT")) == str(-signal.SIGINT)
    assert run(HELD_THEN_FORKED.format(name="SIGHUP")) == str(-signal.SIGHUP)
