"""Fixtures for the agent tests: the fake control plane and a running agent."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from agent_testkit import RunningAgent, start_agent
from fake_control_plane import FakeControlPlane


@pytest.fixture
async def control_plane() -> AsyncIterator[FakeControlPlane]:
    plane = FakeControlPlane()
    await plane.start()
    try:
        yield plane
    finally:
        await plane.stop()


@pytest.fixture
def launch(control_plane: FakeControlPlane) -> Iterator[Callable[..., RunningAgent]]:
    """Start agents against the fake control plane; all are stopped (with their Envoys) after."""
    started: list[RunningAgent] = []

    def launch_agent(**options: Any) -> RunningAgent:
        agent = start_agent(control_plane, **options)
        started.append(agent)
        return agent

    try:
        yield launch_agent
    finally:
        for agent in started:
            agent.stop()
