"""TCP relays between the host's network namespace and the node's.

The node agent lives in the node namespace (so probes reach pod addresses, as a kubelet's do),
while the API server, and a control plane run on the host, listen on the host's loopback.
Neither namespace routes to the other, and we will not add routes to your host, so the two are
joined in user space: a relay listens in one namespace and, for each connection, dials its
target from the other. A socket belongs to the namespace of the thread that created it, so
the relay makes its sockets by stepping the calling thread into the right namespace for the
`socket()` call only (`setns`, which Linux allows per thread for network namespaces).

Used for: the API server (the agent's own client, and pods through the `kubernetes` Service),
services backed by a process on the host (`--host-service`), host ports that reach a
Service inside (`--expose`, how the API server reaches a webhook running as a pod), and the
host ports of NodePort/LoadBalancer Services (`HostPortRelays`: an ingress gateway from the
host).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

log = logging.getLogger("sidemesh.local.node_ports")

CLONE_NEWNET = 0x40000000
CONNECT_TIMEOUT = 10.0
BUFFER = 65536

Target = Callable[[], tuple[str, int] | None]  # where to dial now; None: nowhere (refuse)


class Namespace:
    """A network namespace held open by a file descriptor."""

    def __init__(self, path: str, name: str) -> None:
        self.name = name
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    @classmethod
    def current(cls) -> Namespace:
        return cls("/proc/thread-self/ns/net", "host")

    @classmethod
    def named(cls, name: str) -> Namespace:
        return cls(f"/run/netns/{name}", name)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _setns(fd: int, what: str) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"setns into {what}: {os.strerror(error)}")


def socket_in(namespace: Namespace) -> socket.socket:
    """A non-blocking TCP socket of `namespace`; the calling thread is back where it was."""
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(namespace.fd, f"network namespace {namespace.name}")
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        finally:
            _setns(here, "the thread's own network namespace")
    finally:
        os.close(here)
    sock.setblocking(False)
    return sock


@dataclass(frozen=True)
class Relay:
    """Listen on `listen` in `listen_in`; dial `target()` from `dial_in`."""

    name: str
    listen_in: Namespace
    listen: tuple[str, int]
    dial_in: Namespace
    target: Target


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(BUFFER):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, ConnectionError):
        pass


class RelayServer:
    """One running relay."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.server: asyncio.Server | None = None
        self.connections: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        listener = socket_in(self.relay.listen_in)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(self.relay.listen)
        listener.listen(128)
        self.server = await asyncio.start_server(self._accepted, sock=listener)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.add(writer)
        try:
            await self._relay(reader, writer)
        finally:
            self.connections.discard(writer)
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        target = self.relay.target()
        if target is None:
            return
        upstream = socket_in(self.relay.dial_in)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.sock_connect(upstream, target), CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            upstream.close()
            log.warning("relay %s: cannot reach %s:%d: %s", self.relay.name, *target, exc)
            return
        up_reader, up_writer = await asyncio.open_connection(sock=upstream)
        self.connections.add(up_writer)
        try:
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        finally:
            self.connections.discard(up_writer)
            up_writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in list(self.connections):
            writer.close()  # its pumps end, and the upstream side with them


class HostPortRelays:
    """Host ports kept in step with what Services ask for (`services.host_ports`): each listens
    on the host and dials, from the node namespace, the address its Service has now."""

    def __init__(self, host: Namespace, node: Namespace) -> None:
        self.host = host
        self.node = node
        self.servers: dict[tuple[str, int], RelayServer] = {}
        self.targets: dict[tuple[str, int], tuple[str, int]] = {}
        self.failed: set[tuple[str, int]] = set()  # could not listen: said once, tried again

    async def apply(self, wanted: Mapping[tuple[str, int], tuple[tuple[str, int], str]]) -> None:
        """`wanted`: (host address, port) → ((cluster IP, port), what for the logs)."""
        self.targets = {listen: target for listen, (target, _) in wanted.items()}
        for listen in [k for k in self.servers if k not in wanted]:
            await self.servers.pop(listen).stop()
            log.info("host port %s:%d closed", *listen)
        for listen, (_, what) in wanted.items():
            if listen in self.servers:
                continue
            relay = Relay(
                name=f"{listen[0]}:{listen[1]} ({what})",
                listen_in=self.host,
                listen=listen,
                dial_in=self.node,
                target=functools.partial(self._target, listen),
            )
            server = RelayServer(relay)
            try:
                await server.start()
            except OSError as exc:
                if listen not in self.failed:
                    log.warning("host port %s:%d for %s: cannot listen: %s", *listen, what, exc)
                    self.failed.add(listen)
                continue
            self.failed.discard(listen)
            self.servers[listen] = server
            log.info("host port %s:%d reaches %s", *listen, what)

    def _target(self, listen: tuple[str, int]) -> tuple[str, int] | None:
        return self.targets.get(listen)  # looked up per connection: the Service may move

    async def stop(self) -> None:
        for server in self.servers.values():
            await server.stop()
        self.servers.clear()


NODE_PORT_RANGE = range(30000, 32768)  # Kubernetes' default --service-node-port-range


def free_node_port(start: int = NODE_PORT_RANGE.start) -> int | None:
    """A port of the NodePort range that nothing on the host's loopback holds now (from
    `start` on, wrapping around), or None; for a NodePort Service the runtime will relay."""
    span = len(NODE_PORT_RANGE)
    first = (start - NODE_PORT_RANGE.start) % span
    for offset in range(span):
        candidate = NODE_PORT_RANGE.start + (first + offset) % span
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return candidate
    return None
