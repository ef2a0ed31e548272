"""Tiny TCP listener and client the netns tests run inside their network namespaces.

netns_probe.py listen PORT TAG [--family 4|6] [--transparent]
    Prints "ready", then answers every connection with one line
    "TAG ORIGINAL LOCAL": ORIGINAL is the pre-NAT destination (SO_ORIGINAL_DST) or "-",
    LOCAL the address the connection was accepted on (for TPROXY, the original one).
netns_probe.py connect HOST PORT [--uid UID] [--gid GID]
    Drops to UID/GID first (the "app" is not root), connects, prints the line it got,
    or "error: ..." and exits 1. Everything is bounded by a 5 s timeout.
"""

from __future__ import annotations

import argparse
import encodings.idna  # noqa: F401  # getaddrinfo needs it; after setuid it may be unreadable
import ipaddress
import os
import socket
import struct
import sys

TIMEOUT_SECONDS = 5.0
SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h; IP6T_SO_ORIGINAL_DST has the same value
IP_TRANSPARENT = 19


def original_destination(connection: socket.socket, family: int) -> str:
    try:
        if family == 4:
            raw = connection.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
            port, address = struct.unpack_from("!2xH4s", raw)
            return f"{ipaddress.IPv4Address(address)}:{port}"
        raw = connection.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
        port, address = struct.unpack_from("!2xH4x16s", raw)
        return f"[{ipaddress.IPv6Address(address)}]:{port}"
    except OSError:  # not NATed: no conntrack original destination
        return "-"


def format_address(address: tuple[str, int] | tuple[str, int, int, int]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen(port: int, tag: str, family: int, transparent: bool) -> None:
    server = socket.socket(socket.AF_INET if family == 4 else socket.AF_INET6)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == 6:
        server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    if transparent:
        server.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
    server.bind(("0.0.0.0" if family == 4 else "::", port))
    server.listen(16)
    print("ready", flush=True)
    while True:
        connection, _ = server.accept()
        with connection:
            original = original_destination(connection, family)
            local = format_address(connection.getsockname())
            connection.sendall(f"{tag} {original} {local}\n".encode())


def connect(host: str, port: int, uid: int | None, gid: int | None) -> int:
    if gid is not None:
        os.setgroups([])
        os.setgid(gid)
    if uid is not None:
        os.setuid(uid)
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT_SECONDS) as connection:
            reply = connection.makefile().readline().strip()
    except OSError as error:
        print(f"error: {error}", flush=True)
        return 1
    print(reply, flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    listener = commands.add_parser("listen")
    listener.add_argument("port", type=int)
    listener.add_argument("tag")
    listener.add_argument("--family", type=int, choices=(4, 6), default=4)
    listener.add_argument("--transparent", action="store_true")
    client = commands.add_parser("connect")
    client.add_argument("host")
    client.add_argument("port", type=int)
    client.add_argument("--uid", type=int)
    client.add_argument("--gid", type=int)
    arguments = parser.parse_args()
    if arguments.command == "listen":
        listen(arguments.port, arguments.tag, arguments.family, arguments.transparent)
        return 0
    return connect(arguments.host, arguments.port, arguments.uid, arguments.gid)


if __name__ == "__main__":
    sys.exit(main())
