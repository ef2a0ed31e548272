"""The Envoy supervisor with stand-in processes: unexpected exits, output, stop, drain, death
signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from agent_testkit import is_running
from local_servers import HttpBehaviour, http_server

from sidemesh.agent.config import AgentFlags, load_settings
from sidemesh.agent.envoy import (
    DRAIN_PATH,
    EnvoyExitedError,
    EnvoyNotFoundError,
    EnvoySupervisor,
    envoy_command,
    find_envoy_binary,
)

PY = sys.executable


def test_envoy_command_carries_istios_flags(tmp_path: Path) -> None:
    env = {
        "POD_NAME": "p",
        "POD_NAMESPACE": "n",
        "SERVICE_ACCOUNT": "s",
        "PROXY_CONFIG": '{"drainDuration": "20s", "concurrency": 3}',
    }
    flags = AgentFlags(
        config_dir=tmp_path,
        podinfo_dir=tmp_path,
        proxy_log_level="info",
        proxy_component_log_level="misc:error,upstream:debug",
    )
    command = envoy_command(load_settings(env, flags), Path("/bin/envoy"))
    assert command[:3] == ["/bin/envoy", "-c", str(tmp_path / "envoy-rev.json")]
    pairs = dict(zip(command[3::2], command[4::2], strict=False))
    assert pairs["--drain-time-s"] == "20"
    assert pairs["--drain-strategy"] == "immediate"
    assert pairs["--log-level"] == "info"
    assert pairs["--component-log-level"] == "misc:error,upstream:debug"
    assert pairs["--concurrency"] == "3"
    assert "--disable-hot-restart" in command
    assert "--parent-shutdown-time-s" in command


def test_find_envoy_binary(tmp_path: Path) -> None:
    assert find_envoy_binary().name == "envoy"
    with pytest.raises(EnvoyNotFoundError):
        find_envoy_binary(tmp_path / "missing")


async def test_an_unexpected_exit_ends_supervision_with_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No quiet restart: the agent exits and the kubelet restarts (and counts) the container."""
    supervisor = EnvoySupervisor([PY, "-c", "print('pretend envoy'); raise SystemExit(3)"])
    with caplog.at_level(logging.INFO), pytest.raises(EnvoyExitedError, match=r"\(code 3\)"):
        await asyncio.wait_for(supervisor.run(), timeout=30)
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith("envoy[") and m.endswith("pretend envoy") for m in messages)
    assert supervisor.pid is None


async def test_stop_terminates_then_kills(tmp_path: Path) -> None:
    up = tmp_path / "up"
    stubborn = (
        "import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "pathlib.Path(sys.argv[1]).touch(); time.sleep(60)"
    )
    supervisor = EnvoySupervisor([PY, "-c", stubborn, str(up)])
    task = asyncio.create_task(supervisor.run())
    for _ in range(600):  # the child says when its SIGTERM handler is in place
        if supervisor.pid is not None and up.exists():
            break
        await asyncio.sleep(0.05)
    pid = supervisor.pid
    assert pid is not None and up.exists()
    started = time.monotonic()
    await supervisor.stop(grace=0.5)
    await asyncio.wait_for(task, timeout=5)
    assert time.monotonic() - started < 5
    assert supervisor.pid is None
    assert not is_running(pid)


async def test_drain_posts_to_admin_and_waits() -> None:
    admin = HttpBehaviour(body=b"OK\n")
    supervisor = EnvoySupervisor([PY, "-c", "import time; time.sleep(60)"])
    task = asyncio.create_task(supervisor.run())
    try:
        for _ in range(100):
            if supervisor.pid is not None:
                break
            await asyncio.sleep(0.05)
        async with http_server(admin) as port:
            started = time.monotonic()
            await supervisor.drain(admin=("127.0.0.1", port), duration=0.5)
            waited = time.monotonic() - started
        assert [(r.method, r.path) for r in admin.requests] == [("POST", DRAIN_PATH)]
        assert waited >= 0.4
    finally:
        await supervisor.stop()
        await asyncio.wait_for(task, timeout=5)


def test_envoy_dies_with_a_killed_agent(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: SIGKILL the supervising process and its child goes too."""
    script = textwrap.dedent(f"""
        import asyncio
        from sidemesh.agent.envoy import EnvoySupervisor

        async def main():
            supervisor = EnvoySupervisor([{PY!r}, "-c", "import time; time.sleep(120)"])
            task = asyncio.create_task(supervisor.run())
            while supervisor.pid is None:
                await asyncio.sleep(0.05)
            open({str(tmp_path / "pid")!r}, "w").write(str(supervisor.pid))
            await task

        asyncio.run(main())
    """)
    agent = subprocess.Popen([PY, "-c", script])
    pid_file = tmp_path / "pid"
    try:
        deadline = time.monotonic() + 20
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert is_running(child)
        agent.send_signal(signal.SIGKILL)
        agent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while is_running(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not is_running(child)
    finally:
        if agent.poll() is None:
            agent.kill()
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
