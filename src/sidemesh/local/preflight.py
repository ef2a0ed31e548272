"""What the local runtime needs from the host, checked before anything is created."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

TOOLS = {
    "ip": "iproute2",
    "iptables": "iptables",
    "iptables-restore": "iptables",
    "iptables-save": "iptables",
}


def missing_requirements() -> list[str]:
    """Everything that stops the runtime from working here, in words a user can act on."""
    if sys.platform != "linux":
        return ["the local runtime needs Linux (it runs pods as network namespaces)"]
    problems = []
    if os.geteuid() != 0:
        problems.append(
            "it must run as root: it creates network namespaces, veth pairs and iptables "
            "rules (inside namespaces of its own; the host's network is not changed). "
            "Run it with sudo."
        )
    for tool, package in TOOLS.items():
        if shutil.which(tool) is None:
            problems.append(f"`{tool}` is not in PATH (install the {package} package)")
    if not Path("/proc/self/ns/net").exists():
        problems.append("this kernel has no network namespaces (/proc/self/ns/net is missing)")
    return problems
