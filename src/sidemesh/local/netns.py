"""Sockets inside a network namespace, without moving the whole process there.

A socket belongs to the network namespace of the thread that created it, for its whole life.
So a short-lived thread enters the namespace (`setns`, which Linux allows per thread for
network namespaces), connects, and hands the socket back; the calling thread never moves. The
daemon instead enters the node namespace once at start, before it has any thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import socket
import threading
from pathlib import Path

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = Path("/run/netns")


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def enter_netns(name: str) -> None:
    """Move the calling thread into network namespace `name` (created by `ip netns add`)."""
    fd = os.open(NETNS_RUN_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc().setns(fd, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"setns into network namespace {name}: {os.strerror(error)}")
    finally:
        os.close(fd)


def connect_in_netns(name: str, host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to host:port made from inside network namespace `name`."""
    result: list[socket.socket] = []
    failure: list[BaseException] = []

    def worker() -> None:
        try:
            enter_netns(name)
            result.append(socket.create_connection((host, port), timeout=timeout))
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=worker, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join(timeout + 5)
    if failure:
        raise failure[0]
    if not result:
        raise TimeoutError(f"connecting to {host}:{port} in {name} did not finish")
    return result[0]
