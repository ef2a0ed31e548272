"""Capped exponential backoff for Kubernetes API calls.

The control plane must outlive API-server restarts and network blips: a failed call is
logged, counted, and retried after 0.5 s, 1 s, 2 s ... up to a cap, for as long as it takes.
Only a cancellation stops it. Errors that retrying cannot fix (403 Forbidden, 422 Invalid)
are retried too, but logged louder: an RBAC fix or a recreated object can still cure them
without restarting the pod.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from sidemesh.kube.client import describe_error, is_transient
from sidemesh.kube.metrics import KUBE_METRICS, KubeMetrics

log = logging.getLogger("sidemesh.kube")

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Backoff:
    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.1  # ± fraction, so replicas do not retry in lockstep

    def delays(self) -> Iterator[float]:
        delay = self.initial
        while True:
            spread = delay * self.jitter
            yield max(0.0, delay + random.uniform(-spread, spread))
            delay = min(self.maximum, delay * self.factor)


DEFAULT_BACKOFF = Backoff()


async def retry_forever(
    operation: str,
    call: Callable[[], Awaitable[T]],
    *,
    backoff: Backoff | None = None,
    metrics: KubeMetrics = KUBE_METRICS,
    sleep: Sleep = asyncio.sleep,
) -> T:
    """`await call()` until it succeeds, backing off between failures."""
    delays = (backoff or DEFAULT_BACKOFF).delays()
    while True:
        try:
            return await call()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            delay = next(delays)
            metrics.inc("sidemesh_kube_api_failures_total", operation=operation)
            metrics.inc("sidemesh_kube_api_retries_total", operation=operation)
            # A transient failure is still a failure the operator should see (a warning);
            # one retrying cannot fix (403, 422) needs them to act (an error).
            level = logging.WARNING if is_transient(exc) else logging.ERROR
            log.log(level, "%s failed, retrying in %.1fs: %s", operation, delay,
                    describe_error(exc))  # fmt: skip
            await sleep(delay)


async def follow_forever(
    follow: Callable[[Callable[[], None]], Awaitable[None]],
    *,
    operation: str,
    activity: str,
    logger: logging.Logger,
    metrics: KubeMetrics,
    backoff: Backoff = DEFAULT_BACKOFF,
    sleep: Sleep = asyncio.sleep,
) -> None:
    """Run `follow(healthy)` (a watch) again whenever it ends, backing off after failures;
    `healthy()` says the stream delivered, so the next failure starts the backoff over."""
    delays = backoff.delays()

    def healthy() -> None:
        nonlocal delays
        delays = backoff.delays()

    while True:
        try:
            await follow(healthy)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            metrics.inc("sidemesh_kube_api_failures_total", operation=operation)
            delay = next(delays)
            logger.warning("%s failed, again in %.1fs: %s", activity, delay, describe_error(exc))
            await sleep(delay)
