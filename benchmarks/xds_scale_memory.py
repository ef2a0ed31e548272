"""Memory of an `xds_scale.py` run: RSS of this process and of the client processes, and a
watchdog that ends the run, saying so, before it takes more than its share of the machine."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Any

import orjson


def rss_mb() -> tuple[float, float]:
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def reset_peak_rss() -> None:
    """Start a new peak (Linux: `5` to clear_refs resets VmHWM); best effort."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass


class MemoryWatchdog:
    """Samples the RSS of this process and of the client processes; past `limit_mb` in all,
    prints a result line saying so and ends the run (this machine is shared)."""

    def __init__(self, limit_mb: float, every: float = 0.25) -> None:
        self.limit_mb = limit_mb
        self.every = every
        self.pids: list[int] = []
        self.peak_clients_mb = 0.0
        self.peak_total_mb = 0.0
        self.partial: dict[str, Any] = {}  # figures so far, printed if the run is aborted
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> MemoryWatchdog:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def reset(self) -> None:
        self.peak_clients_mb = self.peak_total_mb = 0.0

    def _watch(self) -> None:
        while not self._stop.wait(self.every):
            clients = sum(process_rss_mb(pid) for pid in list(self.pids))
            total = clients + rss_mb()[0]
            self.peak_clients_mb = max(self.peak_clients_mb, clients)
            self.peak_total_mb = max(self.peak_total_mb, total)
            if total > self.limit_mb:
                self.partial["aborted"] = (f"RSS of server and clients {total:.0f} MB passed "
                                           f"--memory-limit-mb {self.limit_mb:.0f}")  # fmt: skip
                sys.stdout.write(orjson.dumps(self.partial).decode() + "\n")
                sys.stdout.flush()
                for pid in self.pids:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                os._exit(3)


def process_rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
