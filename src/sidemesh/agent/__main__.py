"""The long-running agent process (`python -m sidemesh.agent`, exec'd by `sidemesh agent proxy`
with its resolved settings; see `launch`). Imports only what the sidecar runs."""

from __future__ import annotations

import asyncio
import os
import sys

from sidemesh.agent.issuing import PendingAnswer
from sidemesh.agent.launch import Handover, configure_logging, read_handover
from sidemesh.agent.run import run_agent


async def _run(handover: Handover) -> int:
    if sys.version_info < (3, 12) and hasattr(os, "pidfd_open"):
        # Python 3.11 waits for each child (Envoy, for the agent's whole life) in a thread of
        # its own; a pidfd in the event loop does the same without one (3.12's default).
        watcher = asyncio.PidfdChildWatcher()
        watcher.attach_loop(asyncio.get_running_loop())
        asyncio.set_child_watcher(watcher)
    first = handover.first_certificate
    pending = None if first is None else PendingAnswer(pid=first.pid, stdout_fd=first.stdout_fd)
    return await run_agent(handover.settings, first_certificate=pending)


def main() -> int:
    handover = read_handover(sys.argv[1:])
    configure_logging(handover.settings.agent_log_level)
    return asyncio.run(_run(handover))


if __name__ == "__main__":
    sys.exit(main())
