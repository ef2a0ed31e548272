"""Pod addresses are not routed on the host: while a runtime is up the host refuses its pod
range locally, so a request from the host to a pod address fails at once instead of leaving
the machine through the default gateway; `down` removes that route and nothing else.

Needs root, `ip` and `iptables` (it starts a real runtime daemon, with no pods)."""

from __future__ import annotations

import errno
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns_kit import needs_root

from sidemesh.local import network
from sidemesh.local.runtime import Runtime

pytestmark = needs_root

POD_ADDRESS = "10.244.77.9"  # in the runtime's pod range, owned by no pod


def route_to(address: str) -> str:
    """`ip route get`'s answer; for an unreachable route the kernel's `No route to host`."""
    done = subprocess.run(["ip", "route", "get", address], capture_output=True, text=True)
    return done.stdout + done.stderr


def refused(route: str) -> bool:
    return route.startswith("unreachable") or "No route to host" in route


def has_host_route(local: Runtime) -> bool:
    """Whether this runtime's own route is there (others' runtimes may be up meanwhile)."""
    state = local.read()
    cidr = state.network.pod_cidr if state is not None else "10.244.0.0/16"
    listed = subprocess.run(
        ["ip", "route", "show", "exact", cidr, "type", "unreachable"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return f"metric {network.host_route_metric(local.prefix)}" in listed


def default_gateway() -> str | None:
    fields = subprocess.run(
        ["ip", "route", "show", "default"], capture_output=True, text=True, check=True
    ).stdout.split()
    return fields[fields.index("via") + 1] if "via" in fields else None


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    local = Runtime(tmp_path / "state")
    local.init()
    try:
        local.start()
        yield local
    finally:
        local.down()


def test_the_host_refuses_pod_addresses_while_a_runtime_is_up(runtime: Runtime) -> None:
    state = runtime.read()
    assert state is not None
    route = route_to(POD_ADDRESS)
    assert refused(route), route
    gateway = default_gateway()
    assert gateway is None or f"via {gateway}" not in route
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(5.0)  # a refusal is immediate; reaching for a gateway would hang
        with pytest.raises(OSError) as failure:
            sock.connect((POD_ADDRESS, 80))
    assert failure.value.errno == errno.EHOSTUNREACH

    assert has_host_route(runtime)
    report = runtime.down()
    assert f"removed the host route refusing {state.network.pod_cidr}" in report
    assert not has_host_route(runtime)
    assert not network.remove_host_route(state.network)  # gone; a second down finds nothing


def test_down_leaves_another_runtimes_route(tmp_path: Path, runtime: Runtime) -> None:
    other = Runtime(tmp_path / "other")
    other.init()
    other_state, state = other.read(), runtime.read()
    assert other_state is not None and state is not None
    network.refuse_pod_range_on_host(other_state.network)  # as its daemon would
    try:
        runtime.down()
        assert not has_host_route(runtime)
        assert has_host_route(other)
        assert refused(route_to(POD_ADDRESS))
    finally:
        other.down()
    assert not has_host_route(other)
