"""`sidemesh agent proxy` and `sidemesh agent wait` as commands."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

from agent_testkit import SIDEMESH, run_sidemesh
from local_servers import HttpBehaviour, closed_port, http_server

BASE_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SIDEMESH, "agent", *args],
        env={**BASE_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _run_async(args: list[str]) -> tuple[int, str]:
    return await run_sidemesh(["agent", *args])


def test_proxy_without_its_env_says_what_is_missing() -> None:
    result = _run(["proxy", "sidecar", "--domain", "x.svc.cluster.local"])
    assert result.returncode == 2
    assert "POD_NAMESPACE is not set" in result.stderr


def test_proxy_with_an_invalid_setting_names_it() -> None:
    env = {
        "POD_NAME": "p",
        "POD_NAMESPACE": "n",
        "SERVICE_ACCOUNT": "s",
        "PROXY_CONFIG": '{"terminationDrainDuration": "later"}',
    }
    result = _run(["proxy", "sidecar"], env)
    assert result.returncode == 2
    assert "terminationDrainDuration" in result.stderr


def test_proxy_without_envoy_fails_fast(tmp_path: object) -> None:
    env = {"POD_NAME": "p", "POD_NAMESPACE": "n", "SERVICE_ACCOUNT": "s"}
    result = _run(
        [
            "proxy",
            "sidecar",
            "--envoy-binary",
            "/nonexistent/envoy",
            "--podinfo-dir",
            "/nonexistent",
        ],
        env,
    )
    assert result.returncode == 1
    assert "/nonexistent/envoy does not exist" in result.stderr


def test_proxy_help_lists_the_injectors_flags() -> None:
    result = _run(["proxy", "--help"])
    assert result.returncode == 0
    for flag in (
        "--domain",
        "--proxyLogLevel",
        "--proxyComponentLogLevel",
        "--log_output_level",
        "--status-port",
        "--xds-plaintext",
    ):
        assert flag in result.stdout


async def test_wait_times_out_on_a_closed_port() -> None:
    started = time.monotonic()
    code, output = await _run_async(
        [
            "wait",
            "--timeout",
            "1",
            "--period",
            "0.1",
            "--url",
            f"http://127.0.0.1:{closed_port()}/healthz/ready",
        ]
    )
    assert code == 1
    assert "Timed out" in output
    assert time.monotonic() - started < 30


async def test_wait_returns_once_ready() -> None:
    behaviour = HttpBehaviour(status=503, body=b"not yet")
    async with http_server(behaviour) as port:

        async def become_ready() -> None:
            # Ready once the command was told "not yet" (its first request answered, its second
            # under way): an event, not a timer, as a loaded machine may start it late.
            while len(behaviour.requests) < 2:
                await asyncio.sleep(0.01)
            behaviour.status, behaviour.body = 200, b"ready"

        flip = asyncio.create_task(become_ready())
        code, output = await _run_async(
            [
                "wait",
                "--timeout",
                "20",
                "--period",
                "0.1",
                "--url",
                f"http://127.0.0.1:{port}/healthz/ready",
            ]
        )
        flip.cancel()  # done already, unless the command gave up first (then code != 0)
    assert code == 0, output
    assert len(behaviour.requests) >= 2
    assert flip.done() and not flip.cancelled()
