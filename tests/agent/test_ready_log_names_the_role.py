"""The agent's one-time "ready" log line names what became ready: a sidecar, or a gateway."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from sidemesh.agent.run import _report_ready


class _ReadyApp:
    async def not_ready_reason(self) -> str | None:
        return None


@pytest.mark.parametrize("role", ["sidecar", "gateway"])
def test_ready_line_names_the_role(role: str, caplog: pytest.LogCaptureFixture) -> None:
    app: Any = _ReadyApp()
    with caplog.at_level(logging.INFO, logger="sidemesh.agent"):
        asyncio.run(_report_ready(app, asyncio.Event(), 0.0, role))
    (line,) = [r.getMessage() for r in caplog.records if "after agent start" in r.getMessage()]
    assert line.startswith(f"{role} ready ")
