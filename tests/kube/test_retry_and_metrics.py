"""Backoff and the counters it feeds."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable

import httpx2
import pytest

from sidemesh.kube.metrics import KubeMetrics
from sidemesh.kube.retry import Backoff, follow_forever, retry_forever


def test_backoff_grows_and_is_capped() -> None:
    delays = list(itertools.islice(Backoff(initial=1, maximum=8, jitter=0).delays(), 6))
    assert delays == [1, 2, 4, 8, 8, 8]
    jittered = list(itertools.islice(Backoff(initial=1, maximum=8, jitter=0.1).delays(), 50))
    assert all(0.9 <= d <= 8.8 for d in jittered)


async def test_retry_forever_retries_until_success_and_counts() -> None:
    metrics = KubeMetrics()
    slept: list[float] = []
    attempts = iter([httpx2.ConnectError("down"), RuntimeError("boom"), "ok"])

    async def call() -> str:
        outcome = next(attempts)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    result = await retry_forever("op", call, backoff=Backoff(jitter=0), metrics=metrics,
                                 sleep=sleep)  # fmt: skip
    assert result == "ok"
    assert slept == [0.5, 1.0]
    assert metrics.value("sidemesh_kube_api_retries_total", operation="op") == 2
    text = metrics.render().decode()
    assert 'sidemesh_kube_api_failures_total{operation="op"} 2' in text
    assert "# TYPE sidemesh_leader gauge" in text


async def test_retry_forever_lets_cancellation_through() -> None:
    async def call() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await retry_forever("op", call, metrics=KubeMetrics())


async def test_follow_forever_backs_off_and_a_healthy_stream_starts_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A watch that fails backs off more each time; one that delivered starts from the
    first delay again. Only cancellation ends it."""
    metrics = KubeMetrics()
    slept: list[float] = []
    # per attempt: whether the stream delivers before it breaks; then cancellation
    attempts = iter([False, False, True, False])

    async def follow(healthy: Callable[[], None]) -> None:
        delivered = next(attempts, None)
        if delivered is None:
            raise asyncio.CancelledError
        if delivered:
            healthy()
        raise httpx2.ConnectError("down")

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    with (
        caplog.at_level(logging.INFO, logger="test.follow"),
        pytest.raises(asyncio.CancelledError),
    ):
        await follow_forever(
            follow, operation="watch things", activity="watching things",
            logger=logging.getLogger("test.follow"), metrics=metrics,
            backoff=Backoff(jitter=0), sleep=sleep,
        )  # fmt: skip
    assert slept == [0.5, 1.0, 0.5, 1.0]
    assert metrics.value("sidemesh_kube_api_failures_total", operation="watch things") == 4
    assert caplog.messages[0].startswith("watching things failed, again in 0.5s: ")
