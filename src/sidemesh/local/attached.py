"""Run a command attached to this client, and stop it when the client is stopped.

`sidemesh local exec` runs the command itself (there is no API server connection that could
close, as `kubectl exec`'s does), so a client that is told to stop must pass it on: SIGTERM,
SIGINT and SIGHUP are forwarded to the command, and the client waits for it to exit.

* Not on a terminal (scripts, tests): the command gets its own process group and a signal goes
  to that whole group, so whatever the command started stops too.
* On a terminal: the command stays in the terminal's foreground group, so it can read the
  terminal and gets ^C (SIGINT) and hangup from it directly; SIGTERM and SIGHUP sent to the
  client are forwarded to it, and SIGINT is left to the terminal (forwarding it too would
  deliver every ^C twice).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import Final

FORWARDED: Final = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def exit_status(returncode: int) -> int:
    """A shell's exit status for a child's return code (-N, killed by signal N: 128+N)."""
    return 128 - returncode if returncode < 0 else returncode


def run_attached(argv: Sequence[str], *, env: Mapping[str, str]) -> int:
    """Run `argv` to completion, forwarding stop signals to it; its exit status."""
    on_terminal = os.isatty(0)
    started: list[subprocess.Popen[bytes]] = []
    pending: list[int] = []  # signals that came before the command existed

    def forward(signum: int, frame: FrameType | None) -> None:
        if not started:
            pending.append(signum)
            return
        pid = started[0].pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if on_terminal:
                if signum != signal.SIGINT:
                    os.kill(pid, signum)
            else:
                os.killpg(pid, signum)

    # Handlers, not SIG_IGN: the command must not inherit an ignored signal (exec resets
    # handlers to the default, but keeps "ignored").
    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED}
    try:
        started.append(
            subprocess.Popen(list(argv), env=dict(env), process_group=None if on_terminal else 0)
        )
        for signum in pending:
            forward(signum, None)
        return exit_status(started[0].wait())
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
