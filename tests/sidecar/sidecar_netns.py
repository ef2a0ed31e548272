"""Processes and sockets in network namespaces, for the whole-sidecar tests.

* `in_netns` runs a function on a short-lived thread that joins a namespace first (`setns`), so
  the test process can probe pods without a helper process; the calling thread never moves.
* `unprivileged` drops to a uid/gid with `setpriv` (capture is decided by uid).
* `Process` wraps what the kit starts: its log, signals, a bounded stop.
* /proc readers: children, names, uids, CPU seconds, RSS.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from proc_support import children as children
from proc_support import cpu_seconds as cpu_seconds
from proc_support import process_name as process_name

T = TypeVar("T")

COMMAND_TIMEOUT = 30.0
CLONE_NEWNET = 0x40000000


def run(argv: list[str], *, timeout: float = COMMAND_TIMEOUT, check: bool = True,
        env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=None if env is None else env
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr}")
    return result


class ProcessDied(AssertionError):
    """A process the wait depends on has exited: waiting longer cannot help."""


def wait_until(check: Callable[[], T], *, timeout: float, every: float = 0.1, what: str) -> T:
    """Poll `check` until it returns something truthy; AssertionError naming `what` after
    `timeout` seconds, with the last value or exception. ProcessDied ends the wait at once."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = value
        except ProcessDied:
            raise
        except Exception as exc:  # reported if it never succeeds
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not reached within {timeout:.0f}s; last: {last!r}")
        time.sleep(every)


# --- reaching into a namespace from the test process ------------------------------------------


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def in_netns(netns: str, work: Callable[[], T], *, timeout: float = COMMAND_TIMEOUT) -> T:
    """Run `work` on a thread that first joins network namespace `netns`: sockets it opens
    belong to that namespace. The calling thread never moves."""
    outcome: list[tuple[bool, Any]] = []

    def worker() -> None:
        try:
            descriptor = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc().setns(descriptor, CLONE_NEWNET) != 0:
                    error = ctypes.get_errno()
                    raise OSError(error, f"setns {netns}: {os.strerror(error)}")
            finally:
                os.close(descriptor)
            outcome.append((True, work()))
        except BaseException as exc:  # handed to the caller
            outcome.append((False, exc))

    thread = threading.Thread(target=worker, name=f"in-{netns}", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        raise TimeoutError(f"work in {netns} did not finish within {timeout}s")
    succeeded, value = outcome[0]
    if not succeeded:
        raise value
    return value  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Reply:
    status: int
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


def http_request(netns: str, host: str, port: int, path: str = "/", *, method: str = "GET",
                 timeout: float = 5.0) -> Reply:  # fmt: skip
    """One HTTP request made from inside `netns` (as root, i.e. not the proxy uid)."""

    def request() -> Reply:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            connection.request(method, path, headers={"Connection": "close"})
            response = connection.getresponse()
            return Reply(response.status, response.read().decode(errors="replace"))
        finally:
            connection.close()

    return in_netns(netns, request, timeout=timeout + 5)


def can_connect(netns: str, host: str, port: int, timeout: float = 2.0) -> bool:
    def attempt() -> bool:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            return False

    return in_netns(netns, attempt, timeout=timeout + 5)


def parse_stats(text: str) -> dict[str, int]:
    """Envoy's admin /stats text → counters and gauges (histograms are skipped)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(": ")
        if name and value.isdigit():
            values[name] = int(value)
    return values


# --- processes --------------------------------------------------------------------------------


@functools.cache
def _needs_read_capability(uid: int, gid: int) -> bool:
    """Whether `uid` cannot run our interpreter as installed (e.g. a venv under a 0700
    /root). Then unprivileged processes get CAP_DAC_READ_SEARCH as an ambient capability:
    it lets them read the installation and changes nothing about networking or iptables'
    uid-owner matching, which is what these tests are about."""
    # Checked from a second exec: setpriv's own exec of the interpreter may still pass the
    # path walk with root's capabilities, the agent's re-exec of itself (agent/launch) not.
    probe = (
        "import os, sys; os.execv(sys.executable, [sys.executable, '-c', "
        "'import sidemesh.cli.main, envoy, grpc'])"
    )
    result = subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
         sys.executable, "-c", probe],
        capture_output=True, timeout=COMMAND_TIMEOUT, cwd="/",
    )  # fmt: skip
    return result.returncode != 0


def unprivileged(uid: int, gid: int) -> list[str]:
    """The prefix that runs a command as uid/gid, with no supplementary groups."""
    argv = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
    if _needs_read_capability(uid, gid):
        argv += ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    return argv


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self, limit: int = 6000) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return text[-limit:]

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if not self.alive():
            return
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout)


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """A memory figure of /proc/PID/status in bytes: VmRSS (all resident pages), or RssAnon
    (the private part: what one more pod costs; file pages such as shared libraries and the
    Envoy binary are shared by every sidecar on a node)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0


def uids(pid: int) -> tuple[int, ...]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return tuple(int(value) for value in line.split()[1:])
    return ()


def tcp_exchange(host: str, port: int, request: bytes) -> bytes:
    """Send `request` on a new connection; everything received until the peer closes."""
    with socket.create_connection((host, port), timeout=10) as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    return received
