"""Waiting for an observable event in async tests: poll until a check holds, with a deadline.

Shared by several areas (`tests/conftest.py` puts this folder on the path); the older copies
in `xds/xds_testkit.py`, `kube/duty_testkit.py` and `security/` may move here."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


async def eventually(check: Callable[[], Any], timeout: float, every: float = 0.2) -> Any:
    """Poll `check()` (sync or async) until truthy and return it; fail with the last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while loop.time() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"condition not reached within {timeout}s; last value: {last!r}")
