"""The node and pod networks, built with `ip` and `iptables` inside namespaces we create.

```
 node netns <prefix>-node:  bridge smbr0 10.244.0.1/16, kube-proxy rules (nat table)
     |  vethXXXXXXXX (master smbr0)
     |
 pod netns <prefix>-pod-<uid>:  eth0 10.244.x.y/16, lo, default via 10.244.0.1
```

Every command names its namespace explicitly (`ip -n`, `ip netns exec`): nothing here ever
runs against the host's own network namespace, even though the daemon that calls it has
itself moved into the node namespace — but for one route. Pod addresses are not routed on the
host, so without it a connection from the host to one would follow the host's default route
and leave the machine; while the runtime is up the host refuses its pod range locally
(`unreachable`, "No route to host"), at a metric of the runtime's own, behind any route the
host already had for that range, and `down` removes exactly that route.

`/etc/netns/<pod netns>/{hosts,resolv.conf}` is what `ip netns exec` bind-mounts over /etc
for the pod's processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from sidemesh.local.model import NetworkRecord

NETNS_ETC = Path("/etc/netns")
COMMAND_TIMEOUT = 30
HOST_ROUTE_METRIC_BASE = 0x5E0000  # far behind any route a host configures itself


class NetworkError(RuntimeError):
    """An ip/iptables command failed; the message holds the command and its stderr."""


def run(argv: Sequence[str], *, stdin: str | None = None, check: bool = True) -> str:
    try:
        completed = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetworkError(f"{' '.join(argv)}: {exc}") from exc
    if check and completed.returncode != 0:
        raise NetworkError(f"{' '.join(argv)}: {completed.stderr.strip() or completed.returncode}")
    return completed.stdout


def list_netns() -> list[str]:
    names = []
    for line in run(["ip", "netns", "list"]).splitlines():
        if line.strip():
            names.append(line.split()[0])
    return names


def netns_exists(name: str) -> bool:
    return (Path("/run/netns") / name).exists() and name in list_netns()


def netns_pids(name: str) -> list[int]:
    output = run(["ip", "netns", "pids", name], check=False)
    return [int(p) for p in output.split() if p.isdigit()]


def host_route_metric(prefix: str) -> int:
    """This runtime's metric for its host route: two runtimes never remove each other's."""
    return HOST_ROUTE_METRIC_BASE + int(hashlib.sha256(prefix.encode()).hexdigest()[:4], 16)


def host_route(network: NetworkRecord) -> list[str]:
    """The route (as `ip route` arguments) that keeps the pod range on the host."""
    return ["unreachable", network.pod_cidr, "metric", str(host_route_metric(network.prefix))]


def refuse_pod_range_on_host(network: NetworkRecord) -> None:
    """Add the host route; call it from the host's network namespace (idempotent)."""
    run(["ip", "route", "replace", *host_route(network)])


def remove_host_route(network: NetworkRecord) -> bool:
    """Remove the host route if it is there (from the host's namespace); True if it was."""
    try:
        run(["ip", "route", "del", *host_route(network)])
    except NetworkError:
        return False  # not there ("No such process"): down runs again after a crash
    return True


def _prefix_length(cidr: str) -> int:
    return ipaddress.ip_network(cidr).prefixlen


def ensure_node(network: NetworkRecord) -> None:
    """The node namespace with its bridge, forwarding on; idempotent."""
    node = network.node_netns
    if not netns_exists(node):
        run(["ip", "netns", "add", node])
    run(["ip", "-n", node, "link", "set", "lo", "up"])
    links = run(["ip", "-n", node, "-o", "link", "show"])
    if f" {network.bridge}:" not in links:
        run(["ip", "-n", node, "link", "add", network.bridge, "type", "bridge"])
        run(
            [
                "ip",
                "-n",
                node,
                "addr",
                "add",
                f"{network.bridge_ip}/{_prefix_length(network.pod_cidr)}",
                "dev",
                network.bridge,
            ]
        )
    run(["ip", "-n", node, "link", "set", network.bridge, "up"])
    # Cluster IPs need a route for the node's own connections (the daemon calling a webhook):
    # a socket with no route fails before the OUTPUT chain could DNAT it.
    run(["ip", "-n", node, "route", "replace", network.service_cidr, "dev", network.bridge])
    run(["ip", "netns", "exec", node, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])


def create_pod_network(network: NetworkRecord, *, netns: str, veth: str, address: str) -> None:
    """A pod namespace wired to the bridge; a leftover of the same name is replaced."""
    delete_pod_network(network, netns=netns, veth=veth)
    run(["ip", "netns", "add", netns])
    node = network.node_netns
    run(
        [
            "ip",
            "-n",
            node,
            "link",
            "add",
            veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            netns,
        ]
    )
    run(["ip", "-n", node, "link", "set", veth, "master", network.bridge, "up"])
    # Forget any old pod's MAC for this address, or the node sends to it until the entry ages.
    run(["ip", "-n", node, "neigh", "flush", "to", address], check=False)
    run(
        ["ip", "-n", netns, "-batch", "-"],
        stdin="\n".join(
            [
                "link set lo up",
                f"addr add {address}/{_prefix_length(network.pod_cidr)} dev eth0",
                "link set eth0 up",
                f"route add default via {network.bridge_ip}",
            ]
        )
        + "\n",
    )


def delete_pod_network(network: NetworkRecord, *, netns: str, veth: str | None) -> None:
    """Remove the pod's namespace and its end of the veth (both idempotent)."""
    if veth:
        run(["ip", "-n", network.node_netns, "link", "del", veth], check=False)
    if netns in list_netns():
        run(["ip", "netns", "del", netns], check=False)
    remove_netns_etc(netns)


def apply_proxy_rules(network: NetworkRecord, rules: str) -> None:
    run(["ip", "netns", "exec", network.node_netns, "iptables-restore"], stdin=rules)


def _write_in_place(path: Path, text: str) -> None:
    # `ip netns exec` bind-mounts the file into running pods by inode: rewrite, never replace.
    if not path.exists():
        path.write_text(text, encoding="utf-8")
        return
    with path.open("r+", encoding="utf-8") as file:
        file.write(text)
        file.truncate()


def write_netns_etc(netns: str, *, hosts: str, resolv_conf: str) -> None:
    directory = NETNS_ETC / netns
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)
    for name, text in (("hosts", hosts), ("resolv.conf", resolv_conf)):
        path = directory / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != text:
            _write_in_place(path, text)
            os.chmod(path, 0o644)


def remove_netns_etc(netns: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(NETNS_ETC / netns)
